#include "commands/image_name.h"

#include <nlohmann/json.hpp>

#include <map>

namespace qdedup::commands {

namespace {

// QEMU's JSON parser also takes single-quoted strings: rewritten with double
// quotes, so that a standard parser reads the text.
std::string standard_json(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '"' && c != '\'') {
      out += c;
      continue;
    }
    out += '"';
    for (++i; i < text.size() && text[i] != c; ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) {
        ++i;
        if (text[i] == '\'') {
          out += '\'';
        } else {
          out += '\\';
          out += text[i];
        }
      } else if (text[i] == '"') {
        out += "\\\"";
      } else {
        out += text[i];
      }
    }
    out += '"';
  }
  return out;
}

// Flattens nested objects into dotted keys ({"file": {"filename": X}} and
// {"file.filename": X} are the same to QEMU).
Status flatten(const nlohmann::json& j, const std::string& prefix,
               std::map<std::string, std::string>& out) {
  for (const auto& [key, value] : j.items()) {
    if (value.is_object()) {
      QD_TRY(flatten(value, prefix + key + ".", out));
    } else if (value.is_string()) {
      out[prefix + key] = value.get<std::string>();
    } else {
      return unsupported("option '" + prefix + key + "' is not supported");
    }
  }
  return Status::ok();
}

}  // namespace

Result<std::map<std::string, std::string>> split_qemu_opts(const std::string& text) {
  std::map<std::string, std::string> out;
  std::string item;
  auto take = [&]() -> Status {
    if (item.empty()) return Status::ok();
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return invalid_argument("option '" + item + "' needs a value");
    out[item.substr(0, eq)] = item.substr(eq + 1);
    item.clear();
    return Status::ok();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
      item += ',';
      ++i;
    } else if (text[i] == ',') {
      QD_TRY(take());
    } else {
      item += text[i];
    }
  }
  QD_TRY(take());
  return out;
}

namespace {

Result<ImageName> from_options(std::map<std::string, std::string> opts) {
  ImageName n;
  auto take = [&](const char* key) {
    auto it = opts.find(key);
    if (it == opts.end()) return std::string();
    std::string v = it->second;
    opts.erase(it);
    return v;
  };
  n.format = take("driver");
  const std::string driver = take("file.driver");
  n.path = take("file.filename");
  if (n.path.empty()) n.path = take("filename");
  if (!driver.empty() && driver != "file") {
    return unsupported("protocol '" + driver + "' is not supported (local files only)");
  }
  if (!opts.empty()) return unsupported("option '" + opts.begin()->first + "' is not supported");
  if (n.path.empty()) return invalid_argument("the options name no file (file.filename)");
  return n;
}

}  // namespace

Result<ImageName> parse_image_name(const std::string& name, bool image_opts,
                                   const std::string& format) {
  if (image_opts) {
    if (!format.empty()) return invalid_argument("--image-opts and --format are mutually exclusive");
    QD_ASSIGN_OR_RETURN(auto opts, split_qemu_opts(name));
    return from_options(std::move(opts));
  }
  if (name.rfind("json:", 0) != 0) return ImageName{name, format};
  const nlohmann::json j = nlohmann::json::parse(standard_json(name.substr(5)), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("could not parse the JSON options");
  }
  std::map<std::string, std::string> opts;
  QD_TRY(flatten(j, "", opts));
  QD_ASSIGN_OR_RETURN(ImageName n, from_options(std::move(opts)));
  if (!format.empty() && !n.format.empty() && format != n.format) {
    return invalid_argument("the format " + format + " differs from the name's driver " + n.format);
  }
  if (n.format.empty()) n.format = format;
  return n;
}

}  // namespace qdedup::commands
