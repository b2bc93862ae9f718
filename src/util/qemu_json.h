// JSON written as qemu-img writes it, byte for byte.
//
// qemu-img builds its --output=json documents from QDicts, hash tables of 512
// buckets walked bucket by bucket, the newest entry of a bucket first (QEMU
// qobject/qdict.c), and prints them with its JSON writer (qobject/json-writer.c):
// four-space indents, an empty container still broken over two lines, and every
// character outside printable ASCII escaped as \uXXXX (upper-case hex, UTF-16
// surrogate pairs, U+FFFD for bytes that are not valid UTF-8). qemu_json() does
// the same, so that qdedup's info and check print what qemu-img prints for the
// same facts.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace qdedup {

// QEMU's QDict bucket of `key` (tdb_hash modulo 512).
unsigned qdict_bucket(const std::string& key);

// `j` as qemu-img's pretty printer writes it (no final newline). Object keys go
// in QDict order; keys of one bucket newest first, taking `j`'s order as the
// order they were added. Integers print in full; a double (which qemu-img's info
// and check never print) as nlohmann::json prints it.
std::string qemu_json(const nlohmann::ordered_json& j);

}  // namespace qdedup
