// qdedup convert [-f FMT] [-O FMT] [-B BACKING [-F FMT]] [-l SNAPSHOT] [-o OPTIONS] [-p] [-q]
//                [-S SIZE] [-n] [-U]
//                [--stats [--output=human|json]] SRC [SRC...] DST
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "commands/command.h"
#include "commands/image_name.h"
#include "ops/convert.h"
#include "util/size.h"

namespace qdedup::commands {

namespace {

struct ConvertArgs {
  std::string source_format;
  std::string target_format = "raw";
  std::vector<std::string> options;
  std::optional<std::string> backing;
  std::optional<std::string> backing_format;
  std::optional<std::string> snapshot;
  bool progress = false;
  std::string sparse = "4k";
  bool existing = false;
  bool compress = false;
  bool force_share = false;
  bool stats = false;
  std::string cache = "writeback";
  std::string output = "human";
  unsigned threads = 0;
  std::vector<std::string> files;
};

nlohmann::ordered_json to_json(const ops::ConvertReport& r) {
  nlohmann::ordered_json j;
  j["target"] = r.target;
  j["format"] = r.target_format;
  j["dedup"] = r.hash.empty() ? "off" : r.hash;
  j["cluster-size"] = r.cluster_size;
  j["guest-bytes-read"] = r.guest_bytes;
  j["zero-clusters"] = r.zero_clusters;
  j["clusters-written"] = r.clusters_written;
  j["clusters-deduplicated"] = r.clusters_deduplicated;
  j["bytes-saved"] = r.bytes_saved();
  j["dedup-ratio"] = r.dedup_ratio();
  j["refcount-cap-overflows"] = r.refcount_cap_overflows;
  j["index-entries"] = r.index_entries;
  j["index-memory-bytes"] = r.index_memory_bytes;
  j["hash-seconds"] = r.hash_seconds;
  j["hash-throughput-bytes-per-second"] = r.hash_bytes_per_second();
  j["wall-seconds"] = r.wall_seconds;
  return j;
}

void render_human(const ops::ConvertReport& r) {
  std::printf("Guest bytes read:       %llu (%s)\n", static_cast<unsigned long long>(r.guest_bytes),
              format_iec_size(r.guest_bytes).c_str());
  std::printf("Zero clusters:          %llu\n", static_cast<unsigned long long>(r.zero_clusters));
  std::printf("Clusters written:       %llu\n", static_cast<unsigned long long>(r.clusters_written));
  std::printf("Clusters deduplicated:  %llu\n", static_cast<unsigned long long>(r.clusters_deduplicated));
  std::printf("Bytes saved:            %llu (%s)\n", static_cast<unsigned long long>(r.bytes_saved()),
              format_iec_size(r.bytes_saved()).c_str());
  std::printf("Dedup ratio:            %.3f\n", r.dedup_ratio());
  if (!r.hash.empty()) {
    std::printf("Hash:                   %s, %s/s\n", r.hash.c_str(),
                format_iec_size(static_cast<uint64_t>(r.hash_bytes_per_second())).c_str());
    std::printf("Refcount cap overflows: %llu\n", static_cast<unsigned long long>(r.refcount_cap_overflows));
  }
  std::printf("Wall time:              %.3f s\n", r.wall_seconds);
}

// -l as qemu-img reads it: `snapshot.id=ID,snapshot.name=NAME` (either), or
// one value that is an id or else a name.
Result<ops::SnapshotSelect> parse_snapshot(const std::string& text) {
  ops::SnapshotSelect s;
  if (text.rfind("snapshot.", 0) != 0) {
    s.id_or_name = text;
    return s;
  }
  auto bad = [&](const std::string& why) {
    return invalid_argument("Failed in parsing snapshot param '" + text + "': " + why);
  };
  auto opts = split_qemu_opts(text);
  if (!opts) return bad(opts.status().message());
  for (const auto& [key, value] : *opts) {
    if (key == "snapshot.id") {
      s.id = value;
    } else if (key == "snapshot.name") {
      s.name = value;
    } else {
      return bad("Invalid parameter '" + key + "'");
    }
  }
  if (!s.id && !s.name) return bad("snapshot_id and name are both NULL");
  return s;
}

Status run_convert(const ConvertArgs& a) {
  if (a.files.size() < 2) return invalid_argument("convert needs a source and a target");
  ops::ConvertOptions o;
  o.sources.assign(a.files.begin(), a.files.end() - 1);
  o.target = a.files.back();
  o.source_format = a.source_format;
  o.target_format = a.target_format;
  o.force_share = a.force_share;
  o.backing = a.backing;
  o.backing_format = a.backing_format;
  if (a.snapshot) {
    QD_ASSIGN_OR_RETURN(o.snapshot, parse_snapshot(*a.snapshot));
  }
  o.existing_target = a.existing;
  o.compress = a.compress;
  o.progress = a.progress && !quiet();
  o.threads = a.threads;
  if (a.cache != "writeback" && a.cache != "unsafe") {
    return invalid_argument("cache mode '" + a.cache + "' is not supported (writeback or unsafe)");
  }
  o.sync = a.cache != "unsafe";
  for (const std::string& opt : a.options) QD_TRY(ops::apply_create_options(opt, o.create));
  if (o.create.help) {
    std::fputs(ops::create_options_help().c_str(), stdout);
    return Status::ok();
  }
  QD_ASSIGN_OR_RETURN(o.sparse_size, parse_size(a.sparse));
  QD_ASSIGN_OR_RETURN(ops::ConvertReport r, ops::convert(io::posix_file_system(), o));
  if (a.stats) {
    if (a.output == "json") {
      std::cout << to_json(r).dump(4) << "\n";
    } else {
      render_human(r);
    }
  }
  return Status::ok();
}

}  // namespace

std::function<int()> register_convert(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  app.add_option("-f", a->source_format, "Source format (qcow2 or raw); probed if absent");
  app.add_option("-O", a->target_format, "Target format: raw (default) or qcow2");
  app.add_option("-o", a->options, "Target options, as for create (dedup=sha256, cluster_size=...)")
      ->allow_extra_args(false);
  app.add_option("-B", a->backing,
                 "Backing file of the target: what the source's top image does not allocate "
                 "is left unallocated (the source's backing file, or one that holds the same)");
  app.add_option("-F", a->backing_format, "Format of the -B backing file (qcow2 or raw)");
  app.add_option("-l", a->snapshot,
                 "Read the source's internal snapshot: its id or name, or "
                 "snapshot.id=ID[,snapshot.name=NAME]");
  app.add_flag("-p", a->progress, "Show progress on stderr");
  app.add_option("-S", a->sparse, "Zero runs of this size are not written (default 4k; 0 writes all)");
  app.add_flag("-n", a->existing, "Write into an existing target (no create)");
  app.add_flag("-c", a->compress, "Compress the target's data clusters (qcow2)");
  app.add_flag("-U,--force-share", a->force_share, "Open sources even if another process writes them");
  app.add_flag("--stats", a->stats, "Print statistics at the end");
  app.add_option("-t", a->cache,
                 "Target cache mode: writeback (default: synced once before the rename) or "
                 "unsafe (never synced, qemu-img's default)");
  app.add_option("--output", a->output, "Statistics format")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--json{json}", a->output, "Same as --output=json");
  app.add_option("--threads", a->threads, "Hashing threads (default: all cores)");
  app.add_option("FILES", a->files, "SRC [SRC...] DST")->required();
  app.footer("Example:\n  qdedup convert -p -O qcow2 -o dedup=sha256 --stats disk.raw disk.qcow2");
  return [a] {
    Status s = run_convert(*a);
    return s ? kExitOk : report_error(s);
  };
}

}  // namespace qdedup::commands
