#include "dedup/stream_hosts.h"

namespace qdedup::dedup {

Result<StreamHosts::Host*> StreamHosts::host(uint64_t hc) {
  if (auto it = hosts_.find(hc); it != hosts_.end()) return &it->second;
  QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(hc));
  Host h;
  h.initial = rc;
  return &hosts_.emplace(hc, h).first->second;
}

Result<StreamHosts::Room> StreamHosts::room(const qcow2::HeldClusters& r, uint64_t refs) {
  Room room;
  for (uint64_t hc = r.first; hc <= r.last; ++hc) {
    QD_ASSIGN_OR_RETURN(Host * h, host(hc));
    room.fits &= h->planned() + refs <= cap_;
    room.flush_first |= h->planned() + h->lost_unflushed + refs > cap_;
  }
  return room;
}

void StreamHosts::gain(const qcow2::HeldClusters& r, uint64_t refs) {
  for (uint64_t hc = r.first; hc <= r.last; ++hc) hosts_[hc].gained += refs;
}

Status StreamHosts::plan_loss(const qcow2::HeldClusters& r, uint64_t refs, bool carried) {
  for (uint64_t hc = r.first; hc <= r.last; ++hc) {
    QD_ASSIGN_OR_RETURN(Host * h, host(hc));
    (carried ? h->carried_loss : h->planned_loss) += refs;
  }
  return Status::ok();
}

void StreamHosts::lose(const qcow2::HeldClusters& r, uint64_t refs, bool unflushed) {
  for (uint64_t hc = r.first; hc <= r.last; ++hc) {
    Host& h = hosts_[hc];  // made by the plan (plan_loss)
    h.lost += refs;
    if (unflushed) h.lost_unflushed += refs;
  }
}

void StreamHosts::flushed() {
  for (auto& [hc, h] : hosts_) h.lost_unflushed = 0;
}

uint64_t StreamHosts::freed() const {
  uint64_t n = 0;
  for (const auto& [hc, h] : hosts_) {
    if (h.gained == 0 && h.planned_loss != 0 && h.initial == h.planned_loss + h.carried_loss) ++n;
  }
  return n;
}

}  // namespace qdedup::dedup
