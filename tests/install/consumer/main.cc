// A server author's smallest use of the installed package: checkpoint and restore, a
// TrackedMap, a Cell and a typed section of the consumer's own Cap'n Proto struct.
#include <baton/cell.h>
#include <baton/checkpoint.h>
#include <baton/table.h>
#include <baton/tracked_map.h>

#include <cstdio>
#include <optional>
#include <string_view>

#include "visit.capnp.h"

int main() {
  baton::Registry reg;
  baton::TrackedMap kv("kv", 1);
  if (!reg.add(kv).ok()) return 1;
  kv.set("a", "1");
  kv.set("b", "2");
  kv.set("c", "3");
  baton::Cell stats("stats", 1);
  if (!reg.add(stats).ok()) return 1;
  if (!stats.add("requests", 41).ok() || !stats.add("requests", 1).ok()) return 1;
  baton::Table<Visit> visits("visits", 1);
  if (!reg.add(visits).ok()) return 1;
  visits.update("/", [](Visit::Builder v) {
    v.setPath("/");
    v.setCount(v.getCount() + 7);
  });
  auto w = baton::CheckpointWriter::begin(reg, {});
  if (!w.ok()) return 2;
  while (true) {
    auto done = w->step();
    if (!done.ok()) return 3;
    if (done.value()) break;
  }
  auto cp = w->finish();
  if (!cp.ok()) return 4;
  baton::Registry reg2;
  baton::TrackedMap kv2("kv", 1);
  if (!reg2.add(kv2).ok()) return 5;
  baton::Cell stats2("stats", 1);
  if (!reg2.add(stats2).ok()) return 5;
  baton::Table<Visit> visits2("visits", 1);
  if (!reg2.add(visits2).ok()) return 5;
  auto r = baton::restore_checkpoint(cp->fd(), reg2);
  if (!r.ok()) return 6;
  // 3 keys, the cell and a visit: 5 records.
  std::printf("consumer: restored %llu records\n", static_cast<unsigned long long>(r->records));
  if (stats2.get("requests") != std::optional<std::string_view>("42")) return 8;
  auto visit = visits2.get("/");
  if (!visit || visit->getCount() != 7 || visit->getPath() != "/") return 9;
  return kv2.same_contents(kv) ? 0 : 7;
}
