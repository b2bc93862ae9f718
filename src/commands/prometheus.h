// `metrics --output=prometheus`: the text exposition format (version 0.0.4),
// for node_exporter's textfile collector. One `image` label per series.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include "ops/metrics.h"

namespace qdedup::commands {

// A label value with backslash, double quote and newline escaped.
std::string prometheus_label_value(std::string_view s);

void render_prometheus(const ops::MetricsReport& r, std::FILE* out);

}  // namespace qdedup::commands
