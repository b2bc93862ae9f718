#include <string_view>

#include "ops/create_options.h"
#include "qcow2/format.h"
#include "util/size.h"

namespace qdedup::ops {

namespace {

Result<bool> parse_bool(const std::string& key, const std::string& v) {
  if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
  if (v == "off" || v == "no" || v == "false" || v == "n") return false;
  return invalid_argument("option " + key + ": '" + v + "' is not on or off");
}

struct OptionHelp {
  const char* key;
  const char* text;
};
constexpr OptionHelp kOptions[] = {
    {"backing_file=<str>", "File name of a base image"},
    {"backing_fmt=<str>", "Image format of the base image (qcow2 or raw)"},
    {"cluster_size=<size>", "qcow2 cluster size (512 to 2M, power of two)"},
    {"compat=<str>", "Compatibility level (0.10 or 1.1)"},
    {"compression_type=<str>", "Compression method used for image cluster compression (zlib or zstd)"},
    {"dedup=<str>", "Deduplication hash (off, sha256, skein, blake2b, xxh3); 4k clusters by default"},
    {"dedup_verify=<bool (on/off)>", "Compare cluster bytes before sharing them"},
    {"extended_l2=<bool (on/off)>", "Extended L2 tables"},
    {"lazy_refcounts=<bool (on/off)>", "Postpone refcount updates"},
    {"preallocation=<str>", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {"refcount_bits=<num>", "Width of a reference count entry in bits (1 to 64, power of two)"},
    {"size=<size>", "Virtual disk size"},
};

Status parse_one(const std::string& key, const std::string& value, CreateRequest& req) {
  qcow2::CreateOptions& o = req.image;
  if (key == "size") {
    QD_ASSIGN_OR_RETURN(uint64_t s, parse_size(value));
    req.size = s;
  } else if (key == "cluster_size") {
    QD_ASSIGN_OR_RETURN(req.cluster_size, parse_size(value));
    req.cluster_size_set = true;
  } else if (key == "lazy_refcounts") {
    QD_ASSIGN_OR_RETURN(o.lazy_refcounts, parse_bool(key, value));
  } else if (key == "extended_l2") {
    QD_ASSIGN_OR_RETURN(o.extended_l2, parse_bool(key, value));
  } else if (key == "refcount_bits") {
    auto r = parse_number(value);
    if (!r) return invalid_argument("option refcount_bits: '" + value + "' is not a number");
    req.refcount_bits = *r;
  } else if (key == "backing_file") {
    o.backing_file = value;
  } else if (key == "backing_fmt") {
    o.backing_format = value;
  } else if (key == "dedup") {
    req.dedup = value;
  } else if (key == "dedup_verify") {
    QD_ASSIGN_OR_RETURN(bool v, parse_bool(key, value));
    req.dedup_verify = v ? "on" : "off";
  } else if (key != "compat" && key != "compression_type" && key != "preallocation") {
    return invalid_argument("invalid option '" + key + "'");
  }
  req.given[key] = value;
  return Status::ok();
}

}  // namespace

Status parse_create_options(const std::string& text, CreateRequest& req) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) continue;
    if (item == "help" || item == "?") {
      req.help = true;
      continue;
    }
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return invalid_argument("option '" + item + "' needs a value (key=value)");
    }
    QD_TRY(parse_one(item.substr(0, eq), item.substr(eq + 1), req));
  }
  return Status::ok();
}

Status resolve_create_options(CreateRequest& req) {
  qcow2::CreateOptions& o = req.image;
  auto given = [&](const char* key) -> const std::string* {
    auto it = req.given.find(key);
    return it == req.given.end() ? nullptr : &it->second;
  };
  if (req.cluster_size_set) {
    const uint64_t cs = req.cluster_size;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)) != 0) {
      return invalid_argument("Cluster size must be a power of two between 512 and 2048k");
    }
    o.cluster_bits = static_cast<uint32_t>(__builtin_ctzll(cs));
  }
  if (const std::string* v = given("compat")) {
    if (*v == "0.10" || *v == "v2") {
      o.version = 2;
    } else if (*v == "1.1" || *v == "v3") {
      o.version = 3;
    } else {
      return invalid_argument("invalid compatibility version '" + *v + "'");
    }
  }
  if (given("refcount_bits")) {
    const uint64_t bits = req.refcount_bits;
    if (bits == 0 || bits > 64 || (bits & (bits - 1)) != 0) {
      return invalid_argument("refcount width must be a power of two and may not exceed 64 bits");
    }
    o.refcount_order = static_cast<uint32_t>(__builtin_ctzll(bits));
  }
  if (const std::string* v = given("compression_type")) {
    if (*v == "zlib") {
      o.compression_type = qcow2::kCompressionZlib;
    } else if (*v == "zstd") {
      o.compression_type = qcow2::kCompressionZstd;
    } else {
      return invalid_argument("invalid compression type '" + *v + "' (zlib or zstd)");
    }
  }
  if (const std::string* v = given("preallocation")) {
    if (*v == "off") {
      o.preallocation = qcow2::Preallocation::kOff;
    } else if (*v == "metadata") {
      o.preallocation = qcow2::Preallocation::kMetadata;
    } else if (*v == "falloc") {
      o.preallocation = qcow2::Preallocation::kFalloc;
    } else if (*v == "full") {
      o.preallocation = qcow2::Preallocation::kFull;
    } else {
      return invalid_argument("Parameter 'preallocation' does not accept value '" + *v + "'");
    }
  }
  return Status::ok();
}

Status apply_create_options(const std::string& text, CreateRequest& req) {
  QD_TRY(parse_create_options(text, req));
  return resolve_create_options(req);
}

std::string create_options_help() {
  std::string out = "Supported options:\n";
  for (const OptionHelp& o : kOptions) {
    std::string key = o.key;
    key.resize(std::max<size_t>(key.size(), 32), ' ');
    out += "  " + key + " - " + o.text + "\n";
  }
  return out;
}

}  // namespace qdedup::ops
