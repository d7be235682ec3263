// A server author's smallest use of the installed package: checkpoint and restore.
#include <baton/checkpoint.h>
#include <baton/tracked_map.h>

#include <cstdio>

int main() {
  baton::Registry reg;
  baton::TrackedMap kv("kv", 1);
  if (!reg.add(kv).ok()) return 1;
  kv.set("a", "1");
  kv.set("b", "2");
  kv.set("c", "3");
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
  auto r = baton::restore_checkpoint(cp->fd(), reg2);
  if (!r.ok()) return 6;
  std::printf("consumer: restored %llu records\n", static_cast<unsigned long long>(r->records));
  return kv2.same_contents(kv) ? 0 : 7;
}
