// qdedup info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "commands/command.h"
#include "commands/dedup_text.h"
#include "commands/image_name.h"
#include "dedup/extension.h"
#include "io/file_system.h"
#include "ops/info.h"
#include "util/qemu_json.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::commands {

namespace {

using nlohmann::ordered_json;
using ops::DedupInfo;
using ops::InfoEntry;
using qcow2::ImageInfo;

const char* hash_label(const dedup::DedupExtension& e) {
  auto algo = hash::hash_from_id(e.hash_algorithm);
  return algo ? hash::hash_name(*algo) : "unknown";
}

ordered_json dedup_json(const DedupInfo& d) {
  ordered_json j;
  if (!d.ext) {
    j["error"] = to_valid_utf8(d.error);
    return j;
  }
  const dedup::DedupExtension& e = *d.ext;
  j["hash"] = hash_label(e);
  j["verify"] = (e.flags & dedup::kDedupFlagVerify) != 0;
  const bool valid = d.index_state == dedup::IndexState::kValid;
  j["index-state"] = dedup::index_state_name(d.index_state);
  j["index-valid"] = valid;  // the autoclear bit; kept for scripts written before index-state
  j["index-entries"] = e.index_entries;
  j["index-offset"] = e.index_offset;
  j["index-size"] = e.index_size;
  j["refcount-cap"] = e.refcount_cap;
  ordered_json counters;
  for (const auto& [key, value] : dedup::counter_fields(e.counters)) counters[key] = value;
  counters["last-run-time"] = e.counters.last_run_time;
  counters["last-run-version"] = to_valid_utf8(e.counters.last_run_version);
  j["counters"] = counters;
  return j;
}

void render_dedup_human(const DedupInfo& d, std::FILE* out) {
  std::fprintf(out, "Deduplication (qdedup):\n");
  if (!d.ext) {
    std::fprintf(out, "    error: %s\n", escape_for_display(d.error).c_str());
    return;
  }
  const dedup::DedupExtension& e = *d.ext;
  std::fprintf(out, "    hash: %s%s\n", hash_label(e),
               (e.flags & dedup::kDedupFlagVerify) != 0 ? " (verify)" : "");
  std::fprintf(out, "    index: %s%s\n", dedup::index_state_name(d.index_state),
               d.index_state == dedup::IndexState::kValid
                   ? ""
                   : " (the image was written by a program that does not maintain it; qdedup "
                     "rebuilds it before deduplicating)");
  std::fprintf(out, "    index entries: %llu\n", static_cast<unsigned long long>(d.ext->index_entries));
  std::fprintf(out, "    refcount cap: %llu\n", static_cast<unsigned long long>(d.ext->refcount_cap));
  print_counters(out, e.counters, "    ", 0);
}

ordered_json to_json(const ImageInfo& i) {
  ordered_json j;
  j["filename"] = to_valid_utf8(i.filename);
  j["format"] = i.format;
  j["virtual-size"] = i.virtual_size;
  j["actual-size"] = i.actual_size;
  if (i.cluster_size) j["cluster-size"] = *i.cluster_size;
  j["dirty-flag"] = i.dirty;
  if (i.backing_filename) j["backing-filename"] = to_valid_utf8(*i.backing_filename);
  if (i.full_backing_filename) j["full-backing-filename"] = to_valid_utf8(*i.full_backing_filename);
  if (i.backing_format) j["backing-filename-format"] = to_valid_utf8(*i.backing_format);
  if (!i.snapshots.empty()) {
    ordered_json snaps = ordered_json::array();
    for (const auto& s : i.snapshots) {
      ordered_json o;
      o["id"] = to_valid_utf8(s.id);
      o["name"] = to_valid_utf8(s.name);
      o["vm-state-size"] = s.vm_state_size;
      o["date-sec"] = s.date_sec;
      o["date-nsec"] = s.date_nsec;
      o["vm-clock-sec"] = s.vm_clock_nsec / 1000000000;
      o["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000;
      if (s.icount) o["icount"] = *s.icount;
      snaps.push_back(o);
    }
    j["snapshots"] = snaps;
  }
  if (i.qcow2) {
    const auto& q = *i.qcow2;
    ordered_json d;
    d["compat"] = q.compat;
    d["compression-type"] = q.compression_type;
    if (q.compat != "0.10") d["lazy-refcounts"] = q.lazy_refcounts;
    if (q.bitmaps) {
      ordered_json bms = ordered_json::array();
      for (const auto& b : *q.bitmaps) {
        bms.push_back({{"flags", b.flags}, {"name", to_valid_utf8(b.name)}, {"granularity", b.granularity}});
      }
      d["bitmaps"] = bms;
    }
    d["refcount-bits"] = q.refcount_bits;
    if (q.compat != "0.10") {
      d["corrupt"] = q.corrupt;
      d["extended-l2"] = q.extended_l2;
    }
    j["format-specific"] = {{"type", "qcow2"}, {"data", d}};
  }
  return j;
}

std::string snapshot_row(const qcow2::SnapshotInfo& s) {
  char date[32] = "";
  std::time_t t = s.date_sec;
  std::tm tm{};
  localtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  uint64_t secs = s.vm_clock_nsec / 1000000000;
  char clock[48];
  std::snprintf(clock, sizeof clock, "%02llu:%02llu:%02llu.%03llu",
                static_cast<unsigned long long>(secs / 3600),
                static_cast<unsigned long long>((secs / 60) % 60),
                static_cast<unsigned long long>(secs % 60),
                static_cast<unsigned long long>((s.vm_clock_nsec / 1000000) % 1000));
  std::string icount = s.icount ? std::to_string(*s.icount) : "";
  char row[512];
  // QEMU 7.2's bdrv_snapshot_dump() row format (its header line differs).
  std::snprintf(row, sizeof row, "%-9s %-16s %8s%20s%13s%11s", escape_for_display(s.id).c_str(),
                escape_for_display(s.name).c_str(), format_iec_size(s.vm_state_size).c_str(), date,
                clock, icount.c_str());
  return row;
}

void render_human(const ImageInfo& i, std::FILE* out) {
  std::fprintf(out, "image: %s\n", escape_for_display(i.filename).c_str());
  std::fprintf(out, "file format: %s\n", i.format.c_str());
  std::fprintf(out, "virtual size: %s (%llu bytes)\n", format_iec_size(i.virtual_size).c_str(),
               static_cast<unsigned long long>(i.virtual_size));
  std::fprintf(out, "disk size: %s\n", format_iec_size(i.actual_size).c_str());
  if (i.cluster_size) std::fprintf(out, "cluster_size: %llu\n", static_cast<unsigned long long>(*i.cluster_size));
  if (i.dirty) std::fprintf(out, "cleanly shut down: no\n");
  if (i.backing_filename) {
    std::string b = escape_for_display(*i.backing_filename);
    if (i.full_backing_filename && *i.full_backing_filename != *i.backing_filename) {
      b += " (actual path: " + escape_for_display(*i.full_backing_filename) + ")";
    }
    std::fprintf(out, "backing file: %s\n", b.c_str());
  }
  if (i.backing_format) std::fprintf(out, "backing file format: %s\n", escape_for_display(*i.backing_format).c_str());
  if (!i.snapshots.empty()) {
    std::fprintf(out, "Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
                 "VM CLOCK", "ICOUNT");
    for (const auto& s : i.snapshots) std::fprintf(out, "%s\n", snapshot_row(s).c_str());
  }
  if (!i.qcow2) return;
  const auto& q = *i.qcow2;
  std::fprintf(out, "Format specific information:\n    compat: %s\n    compression type: %s\n",
               q.compat.c_str(), q.compression_type.c_str());
  if (q.compat != "0.10") std::fprintf(out, "    lazy refcounts: %s\n", q.lazy_refcounts ? "true" : "false");
  if (q.bitmaps) {
    std::fprintf(out, "    bitmaps:\n");
    for (size_t n = 0; n < q.bitmaps->size(); ++n) {
      const auto& b = (*q.bitmaps)[n];
      std::fprintf(out, "        [%zu]:\n            flags:\n", n);
      for (size_t f = 0; f < b.flags.size(); ++f) {
        std::fprintf(out, "                [%zu]: %s\n", f, b.flags[f].c_str());
      }
      std::fprintf(out, "            name: %s\n            granularity: %llu\n",
                   escape_for_display(b.name).c_str(), static_cast<unsigned long long>(b.granularity));
    }
  }
  std::fprintf(out, "    refcount bits: %u\n", q.refcount_bits);
  if (q.compat != "0.10") {
    std::fprintf(out, "    corrupt: %s\n    extended l2: %s\n", q.corrupt ? "true" : "false",
                 q.extended_l2 ? "true" : "false");
  }
}

ordered_json entry_json(const InfoEntry& e) {
  ordered_json j = to_json(e.image);
  if (e.dedup) j["qdedup"] = dedup_json(*e.dedup);
  return j;
}

}  // namespace

std::function<int()> register_info(CLI::App& app) {
  auto a = std::make_shared<ops::InfoJob>();
  app.add_option("-f", a->format, "Image format (qcow2 or raw); probed if absent");
  app.add_option("--output", a->output, "Output format")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--json{json}", a->output, "Same as --output=json");
  app.add_flag("--backing-chain", a->backing_chain, "Also show every image of the backing chain");
  app.add_flag("-U,--force-share", a->force_share, "Open even if another process is writing the image");
  auto image_opts = std::make_shared<bool>(false);
  app.add_flag("--image-opts", *image_opts,
               "FILE is an option string (driver=qcow2,file.filename=PATH)");
  app.add_option("FILE", a->file, "Image (a path, or a json:{...} name)")->required();
  app.footer("Example:\n  qdedup info --output=json disk.qcow2");
  return [a, image_opts] {
    auto name = parse_image_name(a->file, *image_opts, a->format);
    if (!name) return report_error(name.status().with_prefix(a->file));
    a->file = name->path;
    a->format = name->format;
    auto infos = ops::info(io::posix_file_system(), *a);
    if (!infos) return report_error(infos.status());
    if (a->output == "json") {
      if (a->backing_chain) {
        ordered_json arr = ordered_json::array();
        for (const auto& i : *infos) arr.push_back(entry_json(i));
        std::cout << qemu_json(arr) << "\n";
      } else {
        std::cout << qemu_json(entry_json(infos->front())) << "\n";
      }
      return kExitOk;
    }
    for (size_t n = 0; n < infos->size(); ++n) {
      if (n > 0) std::printf("\n");
      render_human((*infos)[n].image, stdout);
      if ((*infos)[n].dedup) render_dedup_human(*(*infos)[n].dedup, stdout);
    }
    return kExitOk;
  };
}

}  // namespace qdedup::commands
