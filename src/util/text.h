// Making untrusted strings (names read from an image) safe to print.
#pragma once

#include <string>
#include <string_view>
#include <cstddef>
#include <cstdint>

namespace qdedup {

// Printable ASCII is kept; backslash and every other byte become \\ or \xNN,
// so a name from a hostile image cannot move the cursor or fake output lines.
std::string escape_for_display(std::string_view s);

// "0x1f000" for messages about offsets and entries.
std::string hex(uint64_t value);
// The same without "0x" ("1f000"), as qemu-img prints L1/L2 entries.
std::string hex_digits(uint64_t value);
// Lower-case hex of `n` bytes (hash values in messages).
std::string hex_bytes(const uint8_t* p, size_t n);

// Valid UTF-8 for JSON: invalid bytes become U+FFFD (nlohmann::json would
// otherwise throw on output).
std::string to_valid_utf8(std::string_view s);

}  // namespace qdedup
