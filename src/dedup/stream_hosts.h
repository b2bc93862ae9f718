// dedup-offline's plan for the host clusters that hold compressed streams
// (dedup/offline.cpp). QEMU counts one reference per L2 entry on every host
// cluster a compressed stream touches, so a host cluster's refcount moves with
// every stream packed into it: it gains when copies are merged into a
// compressed keeper there and loses when a compressed copy there is
// repointed. Its refcount in the plan is initial + gained - lost: the same in
// a dry run, a run, and a run resumed after any table (whose initial refcount
// then holds what the tables before it gained and lost).
//
// Thread safety: none (the deduplicator's planning thread only).
#pragma once

#include <cstdint>
#include <unordered_map>

#include "qcow2/geometry.h"
#include "qcow2/image.h"
#include "util/status.h"

namespace qdedup::dedup {

class StreamHosts {
 public:
  struct Host {
    uint64_t initial = 0;         // stored refcount when first met, before this run changed it
    uint64_t gained = 0;          // references planned into keepers' streams in it
    uint64_t lost = 0;            // references of copies' streams in it repointed so far
    uint64_t lost_unflushed = 0;  // of those, not on disk yet (a run)
    uint64_t planned_loss = 0;    // references of this run's copies in it, once all are repointed
    uint64_t carried_loss = 0;    // the same of the interrupted run's copies (resumed)
    uint64_t planned() const { return initial + gained - lost; }
  };

  // Whether `refs` more references fit in every host cluster of a range.
  struct Room {
    bool fits = true;  // the plan stays within the cap
    // The disk would go beyond the cap unless the losses not on disk yet are
    // written first (a flush writes refcount increases before decreases).
    bool flush_first = false;
  };

  StreamHosts(qcow2::Image& image, uint64_t cap) : image_(image), cap_(cap) {}

  // Makes the record of every host cluster of `r` that has none yet (its
  // stored refcount as `initial`: before any change of this run reaches it,
  // since changes come only from plans that asked first) and says whether
  // `refs` more references fit.
  Result<Room> room(const qcow2::HeldClusters& r, uint64_t refs);
  // Plans `refs` more references in every host cluster of `r` (after room()).
  void gain(const qcow2::HeldClusters& r, uint64_t refs);
  // A copy in `r` that will lose `refs` references: this run's plan, or
  // (`carried`) the interrupted run's.
  Status plan_loss(const qcow2::HeldClusters& r, uint64_t refs, bool carried);
  // `refs` references in `r` repointed; `unflushed`: not on disk yet.
  void lose(const qcow2::HeldClusters& r, uint64_t refs, bool unflushed);
  // Every loss is on disk (the image was flushed).
  void flushed();
  // Host clusters that nothing references once the plan is done: every
  // reference lost, none gained; counted by the run whose copies took part
  // (not again by a resumed run for the interrupted one's).
  uint64_t freed() const;

 private:
  Result<Host*> host(uint64_t hc);

  qcow2::Image& image_;
  const uint64_t cap_;
  std::unordered_map<uint64_t, Host> hosts_;  // by host cluster index
};

}  // namespace qdedup::dedup
