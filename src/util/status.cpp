#include "util/status.h"

namespace qdedup {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kCorruption: return "corruption";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kNoSpace: return "no space";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kCrashed: return "crashed";
  }
  return "unknown";
}

}  // namespace qdedup
