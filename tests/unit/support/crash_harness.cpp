// The fault-injection harness declared in support/crash_harness.h.
#include "support/crash_harness.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/faulty_file.h"
#include "io/memory_file.h"
#include "qcow2/create.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "support/write_checks.h"

namespace qdedup::testsupport::crash {

using io::FaultyFile;
using qcow2::CreateOptions;
using qcow2::Image;
using qcow2::ImageOptions;
using qcow2::L2Entry;
using Content = std::vector<uint8_t>;
using Survivors = FaultyFile::Survivors;

Result<std::unique_ptr<Image>> open_on(std::unique_ptr<io::File> f, bool writable,
                                       size_t refcount_cache_blocks) {
  ImageOptions o;
  o.writable = writable;
  o.refcount_cache_blocks = refcount_cache_blocks;
  return Image::open(std::move(f), o);
}

namespace {

std::string describe(const Op& op) {
  std::ostringstream s;
  switch (op.kind) {
    case Op::kWrite:
      s << "write_cluster(" << op.gc << ", p" << op.pattern << ")";
      break;
    case Op::kWritePart:
      s << "write(cluster " << op.gc << " +" << op.offset << ", " << op.length << " bytes)";
      break;
    case Op::kZero:
      s << "zero_cluster(" << op.gc << ")";
      break;
    case Op::kLink:
      s << "link_cluster(" << op.gc << " -> host of " << op.src << ")";
      break;
    case Op::kFlush:
      s << "flush()";
      break;
    case Op::kClose:
      s << "close()";
      break;
  }
  return s.str();
}

// What every guest cluster may read: its content at the last completed flush,
// or any content given to it since (including by the operation that failed).
class Model {
 public:
  Model() = default;
  explicit Model(std::vector<Content> initial)
      : latest_(initial), floor_(std::move(initial)), since_(latest_.size()) {}

  void assign(uint64_t gc, Content c) {
    last_ = {gc, latest_[gc]};
    since_[gc].push_back(c);
    latest_[gc] = std::move(c);
  }
  void flushed() {
    floor_ = latest_;
    for (auto& s : since_) s.clear();
  }
  // The last operation failed: whether it took effect is unknown, even
  // after later flushes.
  void last_failed() {
    if (last_) failed_[last_->first].push_back(last_->second);
  }
  void begin_op() { last_.reset(); }
  bool allowed(uint64_t gc, const Content& c) const {
    if (c == floor_[gc]) return true;
    for (const Content& s : since_[gc]) {
      if (c == s) return true;
    }
    auto it = failed_.find(gc);
    return it != failed_.end() &&
           std::find(it->second.begin(), it->second.end(), c) != it->second.end();
  }
  const Content& latest(uint64_t gc) const { return latest_[gc]; }
  bool settled(uint64_t gc) const { return since_[gc].empty(); }
  uint64_t clusters() const { return latest_.size(); }

 private:
  std::vector<Content> latest_;
  std::vector<Content> floor_;
  std::vector<std::vector<Content>> since_;
  std::optional<std::pair<uint64_t, Content>> last_;
  std::map<uint64_t, std::vector<Content>> failed_;  // contents before a failed op
};

std::string head_hex(const Content& c) {
  std::ostringstream s;
  s << std::hex;
  for (size_t i = 0; i < 8 && i < c.size(); ++i) s << (i ? " " : "") << int{c[i]};
  return s.str();
}

// A scenario running on a FaultyFile. `img` owns `file`.
struct Run {
  std::unique_ptr<Image> img;
  FaultyFile* file = nullptr;
  Model model;
  bool failed = false;
  size_t failed_op = 0;
  Status status;
};

// Runs one operation, updating the model first (a failed operation may have
// reached the disk in part).
Status apply(Image& img, Model& m, const Op& op) {
  const uint64_t cs = img.geometry().cluster_size;
  switch (op.kind) {
    case Op::kWrite: {
      Content d = pattern_cluster(cs, op.pattern);
      m.assign(op.gc, d);
      return img.write_cluster(op.gc, d);
    }
    case Op::kWritePart: {
      Content d = pattern_cluster(op.length, op.pattern);
      Content merged = m.latest(op.gc);
      std::copy(d.begin(), d.end(), merged.begin() + static_cast<std::ptrdiff_t>(op.offset));
      m.assign(op.gc, merged);
      return img.write(op.gc * cs + op.offset, d);
    }
    case Op::kZero:
      m.assign(op.gc, Content(static_cast<size_t>(cs), 0));
      return img.zero_cluster(op.gc);
    case Op::kLink: {
      Result<L2Entry> e = img.l2_entry(op.src);
      if (!e.is_ok()) return e.status();
      if (e->host_offset() == 0) {
        // Only after an earlier failed write of `src` (see keep_going).
        return Status(StatusCode::kNotFound,
                      "link source " + std::to_string(op.src) + " is not allocated");
      }
      m.assign(op.gc, m.latest(op.src));
      return img.link_cluster(op.gc, e->host_offset(), op.src);
    }
    case Op::kFlush:
    case Op::kClose: {
      Status s = op.kind == Op::kFlush ? img.flush() : img.close();
      if (s.is_ok()) m.flushed();
      return s;
    }
  }
  return Status::ok();
}

std::vector<Content> guest_view(std::span<const uint8_t> bytes, uint64_t clusters,
                                std::optional<size_t> snapshot = {}) {
  std::vector<Content> out;
  out.reserve(static_cast<size_t>(clusters));
  for (uint64_t gc = 0; gc < clusters; ++gc) {
    Result<Content> c = testsupport::read_guest_cluster(bytes, gc, snapshot);
    INFO("guest cluster " << gc << ": " << c.status().message());
    REQUIRE(c.is_ok());
    out.push_back(std::move(*c));
  }
  return out;
}

uint64_t guest_clusters_of(std::span<const uint8_t> bytes) {
  auto f =
      std::make_unique<io::MemoryFile>("base", std::vector<uint8_t>(bytes.begin(), bytes.end()));
  Result<std::unique_ptr<Image>> img = open_on(std::move(f), false);
  REQUIRE(img.is_ok());
  return (*img)->geometry().guest_clusters;
}

// `configure` arms the FaultyFile before the scenario starts.
template <typename Configure>
Run run_scenario(const Scenario& s, const std::vector<Content>& initial, Configure configure) {
  auto f = std::make_unique<FaultyFile>(s.base, s.name);
  Run run;
  run.file = f.get();
  configure(*run.file);
  Result<std::unique_ptr<Image>> img = open_on(std::move(f), true, s.refcount_cache_blocks);
  INFO(img.status().message());
  REQUIRE(img.is_ok());
  run.img = std::move(*img);
  run.model = Model(initial);
  for (size_t i = 0; i < s.ops.size(); ++i) {
    run.model.begin_op();
    Status st = apply(*run.img, run.model, s.ops[i]);
    if (!st.is_ok()) {
      run.model.last_failed();
      run.failed = true;
      run.failed_op = i;
      run.status = st;
      break;
    }
  }
  return run;
}

// Collects failures so that one test reports every bad (N, survivor) pair.
class Failures {
 public:
  void add(std::string what) {
    ++count_;
    if (items_.size() < 25) items_.push_back(std::move(what));
  }
  size_t count() const { return count_; }
  std::string text() const {
    std::string t;
    for (const auto& i : items_) t += i + "\n";
    return t;
  }

 private:
  size_t count_ = 0;
  std::vector<std::string> items_;
};

struct Expect {
  const Scenario* scenario;
  std::vector<std::vector<Content>> snapshot_views;  // per snapshot, per cluster
};

// Checks one disk state that a crash (or a failed write) can leave.
void check_survivor(const Expect& e, const Model& m, std::vector<uint8_t> bytes,
                    const std::string& label, Failures& failures) {
  RefCheckReport r = refcheck(bytes);
  if (!r.consistent()) {
    failures.add(label + ": refcheck: " + r.summary(4));
    return;
  }
  for (size_t si = 0; si < e.snapshot_views.size(); ++si) {
    for (uint64_t gc = 0; gc < e.snapshot_views[si].size(); ++gc) {
      Result<Content> c = testsupport::read_guest_cluster(bytes, gc, si);
      if (!c.is_ok() || *c != e.snapshot_views[si][gc]) {
        failures.add(label + ": snapshot " + std::to_string(si) + " guest cluster " +
                     std::to_string(gc) + " changed");
        return;
      }
    }
  }
  // Read every guest cluster through Image.
  auto f = std::make_unique<io::MemoryFile>("survivor", bytes);
  Result<std::unique_ptr<Image>> ro = open_on(std::move(f), false);
  if (!ro.is_ok()) {
    failures.add(label + ": open: " + ro.status().message());
    return;
  }
  const uint64_t cs = (*ro)->geometry().cluster_size;
  std::vector<Content> seen(static_cast<size_t>(m.clusters()), Content(cs));
  for (uint64_t gc = 0; gc < m.clusters(); ++gc) {
    Status st = (*ro)->read(gc * cs, seen[gc]);
    if (!st.is_ok()) {
      failures.add(label + ": read of guest cluster " + std::to_string(gc) + ": " + st.message());
      return;
    }
    if (!m.allowed(gc, seen[gc])) {
      failures.add(label + ": guest cluster " + std::to_string(gc) + " reads [" +
                   head_hex(seen[gc]) + "], neither its flushed nor a newer content (" +
                   (m.settled(gc) ? "settled by a completed flush" : "unflushed") + ")");
      return;
    }
  }
  // Still usable: close, one more write, close, still consistent.
  auto wf = std::make_unique<io::MemoryFile>("survivor", std::move(bytes));
  io::MemoryFile* raw = wf.get();
  Result<std::unique_ptr<Image>> rw = open_on(std::move(wf), true);
  if (!rw.is_ok()) {
    failures.add(label + ": writable open: " + rw.status().message());
    return;
  }
  Image& img = **rw;
  Content extra = pattern_cluster(cs, 0xC0FFEE);
  Status st = img.close();
  if (st.is_ok()) st = img.write_cluster(e.scenario->spare_cluster, extra);
  if (st.is_ok()) st = img.close();
  if (!st.is_ok()) {
    failures.add(label + ": re-open, write and close: " + st.message());
    return;
  }
  RefCheckReport after = refcheck(raw->bytes());
  if (!after.consistent()) {
    failures.add(label + ": after re-open, write and close: " + after.summary(4));
    return;
  }
  Content back(cs);
  for (uint64_t gc = 0; gc < m.clusters(); ++gc) {
    const Content& want = gc == e.scenario->spare_cluster ? extra : seen[gc];
    if (!img.read(gc * cs, back).is_ok() || back != want) {
      failures.add(label + ": after re-open and write, guest cluster " + std::to_string(gc) +
                   " changed");
      return;
    }
  }
}

uint64_t fnv(const std::vector<uint8_t>& b) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t x : b) h = (h ^ x) * 1099511628211ull;
  return h ^ b.size();
}

Expect make_expect(const Scenario& s, uint64_t clusters) {
  Expect e{&s, {}};
  Result<std::vector<testsupport::SnapshotRef>> snaps = testsupport::list_snapshots(s.base);
  REQUIRE(snaps.is_ok());
  for (size_t i = 0; i < snaps->size(); ++i)
    e.snapshot_views.push_back(guest_view(s.base, clusters, i));
  return e;
}

// Fault-free run: everything succeeds, the result is clean, W writes.
uint64_t count_writes(const Scenario& s, const std::vector<Content>& initial) {
  Run run = run_scenario(s, initial, [](FaultyFile&) {});
  INFO(s.name << ": " << run.status.message());
  REQUIRE_FALSE(run.failed);
  const std::vector<uint8_t>& bytes = run.file->live_bytes();
  RefCheckReport r = refcheck(bytes);
  INFO(r.summary());
  REQUIRE(r.clean());
  for (uint64_t gc = 0; gc < run.model.clusters(); ++gc) {
    Result<Content> c = testsupport::read_guest_cluster(bytes, gc);
    REQUIRE(c.is_ok());
    INFO("guest cluster " << gc);
    REQUIRE(*c == run.model.latest(gc));
  }
  return run.file->writes();
}

}  // namespace

void crash_at_every_write(const Scenario& s) {
  const uint64_t clusters = guest_clusters_of(s.base);
  const std::vector<Content> initial = guest_view(s.base, clusters);
  const Expect expect = make_expect(s, clusters);
  const uint64_t w = count_writes(s, initial);
  INFO(s.name << ": " << w << " writes");
  REQUIRE(w > 0);
  Failures failures;
  uint64_t states = 0;
  for (uint64_t n = 0; n <= w; ++n) {
    Run run = run_scenario(s, initial, [n](FaultyFile& f) { f.crash_after_writes(n); });
    std::string at = s.name + ", crash after write " + std::to_string(n) + "/" + std::to_string(w);
    if (n < w && !run.failed) {
      failures.add(at + ": every operation succeeded after the crash");
      continue;
    }
    if (run.failed) {
      at += " in op " + std::to_string(run.failed_op) + " " + describe(s.ops[run.failed_op]);
      if (run.status.code() != StatusCode::kCrashed) {
        failures.add(at + ": failed with '" + run.status.message() + "', not the crash");
      }
    }
    struct Mode {
      Survivors which;
      uint32_t seed;
      const char* name;
    };
    const Mode modes[] = {
        {Survivors::kFlushedOnly, 0, "flushed-only"}, {Survivors::kAll, 0, "all"},
        {Survivors::kRandomSubset, 1, "random#1"},    {Survivors::kRandomSubset, 2, "random#2"},
        {Survivors::kRandomSubset, 3, "random#3"},    {Survivors::kRandomSubset, 4, "random#4"}};
    std::set<uint64_t> seen;
    for (const Mode& mode : modes) {
      std::vector<uint8_t> bytes = run.file->image_after_crash(mode.which, mode.seed);
      if (!seen.insert(fnv(bytes)).second) continue;
      ++states;
      check_survivor(expect, run.model, std::move(bytes), at + ", " + mode.name, failures);
    }
  }
  INFO(failures.count() << " bad crash states of " << states << ":\n" << failures.text());
  CHECK(failures.count() == 0);
}

void no_space_at_every_write(const Scenario& s, bool keep_going) {
  const uint64_t clusters = guest_clusters_of(s.base);
  const std::vector<Content> initial = guest_view(s.base, clusters);
  const Expect expect = make_expect(s, clusters);
  const uint64_t w = count_writes(s, initial);
  Failures failures;
  for (uint64_t n = 1; n <= w; ++n) {
    Run run =
        run_scenario(s, initial, [n](FaultyFile& f) { f.fail_write(n, StatusCode::kNoSpace); });
    std::string at = s.name + ", ENOSPC at write " + std::to_string(n) + "/" + std::to_string(w);
    if (!run.failed) {
      failures.add(at + ": no operation reported the failed write");
      continue;
    }
    at += " in op " + std::to_string(run.failed_op) + " " + describe(s.ops[run.failed_op]);
    if (run.status.code() != StatusCode::kNoSpace) {
      failures.add(at + ": reported '" + run.status.message() + "', not ENOSPC");
    }
    if (keep_going) {
      at += ", then the rest";
      Status st;
      for (size_t i = run.failed_op + 1; i < s.ops.size() && st.is_ok(); ++i) {
        run.model.begin_op();
        st = apply(*run.img, run.model, s.ops[i]);
        // A link to the cluster whose write failed has nothing to share.
        if (st.code() == StatusCode::kNotFound && s.ops[i].kind == Op::kLink) st = Status::ok();
        if (!st.is_ok()) at += ": op " + std::to_string(i) + " " + describe(s.ops[i]);
      }
      if (st.is_ok()) {
        st = run.img->close();
        if (st.is_ok()) run.model.flushed();
        if (!st.is_ok()) at += ": final close()";
      }
      if (!st.is_ok()) {
        failures.add(at + " failed: " + st.message());
        continue;
      }
    }
    check_survivor(expect, run.model, run.file->live_bytes(), at, failures);
  }
  INFO(failures.count() << " bad states:\n" << failures.text());
  CHECK(failures.count() == 0);
}

// ---- Scenarios ----

uint64_t refcount_evictions_of(const Scenario& s) {
  auto f = std::make_unique<io::MemoryFile>("evictions", s.base);
  Result<std::unique_ptr<Image>> img = open_on(std::move(f), true, s.refcount_cache_blocks);
  REQUIRE(img.is_ok());
  Model m(std::vector<Content>((*img)->geometry().guest_clusters,
                               Content((*img)->geometry().cluster_size, 0)));
  for (const Op& op : s.ops) {
    Status st = apply(**img, m, op);
    INFO(describe(op) << ": " << st.message());
    REQUIRE(st.is_ok());
  }
  return (*img)->refcount_evictions();
}

std::vector<uint8_t> prepare(std::vector<uint8_t> base, const std::vector<Op>& ops) {
  auto f = std::make_unique<io::MemoryFile>("prepare", std::move(base));
  io::MemoryFile* raw = f.get();
  Result<std::unique_ptr<Image>> img = open_on(std::move(f), true);
  REQUIRE(img.is_ok());
  Model m(std::vector<Content>((*img)->geometry().guest_clusters,
                               Content((*img)->geometry().cluster_size, 0)));
  for (const Op& op : ops) {
    Status st = apply(**img, m, op);
    INFO(describe(op) << ": " << st.message());
    REQUIRE(st.is_ok());
  }
  Status st = (*img)->close();
  REQUIRE(st.is_ok());
  std::vector<uint8_t> out = raw->bytes();
  RefCheckReport r = refcheck(out);
  INFO(r.summary());
  REQUIRE(r.clean());
  return out;
}

Scenario fresh_writes(const CreateOptions& o, const std::string& name) {
  return {name,
          new_image(o),
          {Op::write(0, 1), Op::write(1, 2), Op::write(5, 3), Op::flush(), Op::write(2, 4),
           Op::write(0, 5), Op::part(6, 100, 3000, 6), Op::write(15, 7), Op::close()},
          9};
}

Scenario overwrites(const CreateOptions& o, const std::string& name) {
  std::vector<uint8_t> base =
      prepare(new_image(o), {Op::write(0, 1), Op::write(1, 2), Op::write(2, 3), Op::write(3, 4)});
  return {name,
          base,
          {Op::write(0, 10), Op::part(1, 10, 500, 11), Op::flush(), Op::write(2, 12),
           Op::write(0, 13), Op::write(4, 14), Op::close()},
          9};
}

Scenario links(const CreateOptions& o, const std::string& name) {
  std::vector<uint8_t> base =
      prepare(new_image(o), {Op::write(0, 1), Op::write(1, 2), Op::write(2, 3), Op::write(3, 4)});
  return {name,
          base,
          {Op::link(8, 0),                                                   // owner 0 loses COPIED
           Op::link(9, 0),                                                   // already shared
           Op::flush(), Op::link(10, 1), Op::link(11, 2), Op::write(0, 20),  // copy on write
           Op::flush(), Op::write(10, 21),  // 1 owns its cluster again
           Op::link(3, 2),                  // replaces 3's own data
           Op::close()},
          12};
}

Scenario rewrite_both_sharers(const CreateOptions& o, const std::string& name) {
  std::vector<uint8_t> base =
      prepare(new_image(o), {Op::write(0, 1), Op::link(8, 0), Op::write(1, 2)});
  return {name, base, {Op::write(8, 30), Op::write(0, 31), Op::write(1, 32), Op::close()}, 12};
}

Scenario zeros(const CreateOptions& o, const std::string& name) {
  std::vector<uint8_t> base =
      prepare(new_image(o), {Op::write(0, 1), Op::write(1, 2), Op::write(2, 3), Op::link(4, 2)});
  return {name,
          base,
          {Op::zero(0), Op::zero(2), Op::flush(), Op::zero(1), Op::zero(7), Op::write(0, 40),
           Op::close()},
          12};
}

Scenario refcount_growth(uint32_t refcount_order, uint64_t fill_to_clusters,
                         const std::string& name) {
  CreateOptions o = options(4 << 20, 9);
  o.refcount_order = refcount_order;
  auto f = std::make_unique<io::MemoryFile>("fill", new_image(o));
  io::MemoryFile* raw = f.get();
  Result<std::unique_ptr<Image>> img = open_on(std::move(f), true);
  REQUIRE(img.is_ok());
  uint64_t gc = 0;
  while (raw->bytes().size() / 512 < fill_to_clusters) {
    Status st = (*img)->write_cluster(gc, pattern_cluster(512, static_cast<uint32_t>(gc + 1)));
    REQUIRE(st.is_ok());
    ++gc;
  }
  REQUIRE((*img)->close().is_ok());
  std::vector<uint8_t> base = raw->bytes();
  std::vector<Op> ops;
  for (uint64_t i = 0; i < 24; ++i) {
    ops.push_back(Op::write(gc + i * 3, static_cast<uint32_t>(50000 + i)));
    if (i % 6 == 5) ops.push_back(Op::flush());
  }
  ops.push_back(Op::link(gc + 100, gc));
  ops.push_back(Op::close());
  return {name, base, ops, gc + 200};
}

Scenario across_refcount_blocks(const std::string& name) {
  // 64-bit refcounts at 512-byte clusters: a block covers 64 clusters, and the
  // 200 data clusters with their L2 tables span four blocks.
  CreateOptions o = options(1 << 20, 9);
  o.refcount_order = 6;
  std::vector<Op> fill;
  for (uint64_t gc = 0; gc < 200; ++gc) fill.push_back(Op::write(gc, static_cast<uint32_t>(gc + 1)));
  std::vector<uint8_t> base = prepare(new_image(o), fill);
  Scenario s{name,
             base,
             {Op::link(1000, 2), Op::link(1001, 190), Op::link(1002, 100),  // blocks 0, 3, 2
              Op::write(2, 70), Op::link(190, 5),  // copy on write; a link replacing own data
              Op::flush(), Op::zero(100), Op::link(1003, 1001), Op::write(1500, 71),
              Op::link(60, 150), Op::close()},
             1800};
  s.refcount_cache_blocks = 1;
  return s;
}

Scenario with_snapshot() {
  Result<std::vector<uint8_t>> made = testsupport::run_qemu_script(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 64k\n"
      "qemu-io -c 'write -P 0x11 0 8k' -c 'write -P 0x22 16k 8k' \"$IMG\"\n"
      "qemu-img snapshot -c s1 \"$IMG\"\n");
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  return {
      "image with a snapshot",
      *made,
      {Op::write(0, 1),                         // copies the shared L2 table and the data
       Op::part(4, 7, 100, 2), Op::link(9, 5),  // shares a snapshot-shared cluster
       Op::flush(), Op::zero(1), Op::write(2, 3), Op::link(10, 2), Op::write(5, 4), Op::close()},
      14};
}

Scenario over_compressed() {
  Result<std::vector<uint8_t>> made = testsupport::run_qemu_script(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 64k\n"
      "qemu-io -c 'write -c -P 0x11 0 4k' -c 'write -c -P 0x22 4k 4k' "
      "-c 'write -c -P 0x33 8k 4k' -c 'write -P 0x44 12k 4k' \"$IMG\"\n");
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  return {"over compressed clusters",
          *made,
          {Op::write(0, 1), Op::part(1, 5, 10, 2), Op::flush(), Op::zero(2), Op::link(6, 3),
           Op::close()},
          14};
}

}  // namespace qdedup::testsupport::crash
