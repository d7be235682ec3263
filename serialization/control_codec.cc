// Cap'n Proto side of the control channel.
#include "control_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "control.capnp.h"

namespace baton::serialization {
namespace {

using namespace baton::handoff;

capnp::Text::Reader text(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }
capnp::Data::Reader data(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

template <typename List>
void set_texts(List l, const std::vector<std::string>& v) {
  for (unsigned i = 0; i < v.size(); ++i) l.set(i, text(v[i]));
}

template <typename Reader>
std::vector<std::string> texts(Reader l) {
  std::vector<std::string> out;
  for (auto t : l) out.push_back(str(t));
  return out;
}

void fill(wire::Timings::Builder b, const Timings& t) {
  b.setStartUs(t.start_us);
  b.setSpawnUs(t.spawn_us);
  b.setCheckpointUs(t.checkpoint_us);
  b.setCatchupUs(t.catchup_us);
  b.setFreezeStartUs(t.freeze_start_us);
  b.setCheckpointBytes(t.checkpoint_bytes);
  b.setDeltas(t.deltas);
  b.setFds(t.fds);
  b.setProbesSent(t.probes_sent);
}

Timings read(wire::Timings::Reader r) {
  return Timings{r.getStartUs(),   r.getSpawnUs(),       r.getCheckpointUs(),
                 r.getCatchupUs(), r.getFreezeStartUs(), r.getCheckpointBytes(),
                 r.getDeltas(),    r.getFds(),           r.getProbesSent()};
}

void fill(capnp::List<wire::HandedFd>::Builder l, const std::vector<HandedFd>& fds) {
  for (unsigned i = 0; i < fds.size(); ++i) {
    l[i].setTag(text(fds[i].tag));
    l[i].setState(data(fds[i].state));
    l[i].setId(fds[i].id);
    l[i].setEarly(fds[i].early);
    l[i].setStateFd(fds[i].state_fd);
    l[i].setWorker(fds[i].worker);
  }
}

std::vector<HandedFd> read(capnp::List<wire::HandedFd>::Reader l) {
  std::vector<HandedFd> out;
  out.reserve(l.size());
  for (auto f : l) {
    out.push_back({str(f.getTag()), str(f.getState()), f.getId(), f.getEarly(), f.getStateFd(),
                   f.getWorker()});
  }
  return out;
}

void fill(wire::ProbeTally::Builder b, const handoff::ProbeTally& t) {
  b.setEvaluated(t.evaluated);
  b.setMismatched(t.mismatched);
  set_texts(b.initDiscrepancies(static_cast<unsigned>(t.discrepancies.size())), t.discrepancies);
}

handoff::ProbeTally read(wire::ProbeTally::Reader r) {
  return {r.getEvaluated(), r.getMismatched(), texts(r.getDiscrepancies())};
}

}  // namespace

std::string encode_message(const Message& m) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<wire::Message>();
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Hello>) {
          auto h = root.initHello();
          h.setProtocolVersion(v.protocol_version);
          h.setPid(v.pid);
          set_texts(h.initCapabilities(static_cast<unsigned>(v.capabilities.size())),
                    v.capabilities);
          auto s = h.initSections(static_cast<unsigned>(v.sections.size()));
          for (unsigned i = 0; i < v.sections.size(); ++i) {
            s[i].setName(text(v.sections[i].name));
            s[i].setMinVersion(v.sections[i].min_version);
            s[i].setMaxVersion(v.sections[i].max_version);
            s[i].setTypeId(v.sections[i].type_id);
          }
          h.setMaxProtocolVersion(v.max_protocol_version);
          h.setWorkers(v.workers);
        } else if constexpr (std::is_same_v<T, Welcome>) {
          auto w = root.initWelcome();
          w.setProtocolVersion(v.protocol_version);
          w.setGeneration(v.generation);
          set_texts(w.initCapabilities(static_cast<unsigned>(v.capabilities.size())),
                    v.capabilities);
          auto l = w.initSchemas(static_cast<unsigned>(v.schemas.size()));
          for (unsigned i = 0; i < v.schemas.size(); ++i) {
            l[i].setName(text(v.schemas[i].name));
            l[i].setVersion(v.schemas[i].version);
            l[i].setTypeId(v.schemas[i].type_id);
            l[i].setSchema(data(v.schemas[i].schema));
          }
        } else if constexpr (std::is_same_v<T, CheckpointReady>) {
          auto c = root.initCheckpointReady();
          c.setStartLsn(v.start_lsn);
          c.setBytes(v.bytes);
          c.setWorkerSegments(v.worker_segments);
        } else if constexpr (std::is_same_v<T, Restored>) {
          auto r = root.initRestored();
          r.setRecords(v.records);
          r.setRestoreUs(v.restore_us);
        } else if constexpr (std::is_same_v<T, Frozen>) {
          auto f = root.initFrozen();
          f.setFinalLsn(v.final_lsn);
          f.setFdCount(v.fd_count);
          f.setFreezeStartUs(v.freeze_start_us);
          auto m = f.initMetrics(static_cast<unsigned>(v.metrics.size()));
          for (unsigned i = 0; i < v.metrics.size(); ++i) {
            m[i].setSeries(text(v.metrics[i].first));
            m[i].setValue(v.metrics[i].second);
          }
          auto w = f.initWorkerFreezeUs(static_cast<unsigned>(v.worker_freeze_us.size()));
          for (unsigned i = 0; i < v.worker_freeze_us.size(); ++i) w.set(i, v.worker_freeze_us[i]);
        } else if constexpr (std::is_same_v<T, FdBatch>) {
          fill(root.initFdBatch().initFds(static_cast<unsigned>(v.fds.size())), v.fds);
        } else if constexpr (std::is_same_v<T, EarlyFds>) {
          fill(root.initEarlyFds().initFds(static_cast<unsigned>(v.fds.size())), v.fds);
        } else if constexpr (std::is_same_v<T, Prepared>) {
          auto p = root.initPrepared();
          p.setAppliedLsn(v.applied_lsn);
          p.setFdsReceived(v.fds_received);
          fill(p.initProbes(), v.probes);
        } else if constexpr (std::is_same_v<T, Commit>) {
          auto c = root.initCommit();
          c.setGeneration(v.generation);
          fill(c.initTimings(), v.timings);
          c.setProbationMs(v.probation_ms);
          c.setDigestK0(v.digest_k0);
          c.setDigestK1(v.digest_k1);
        } else if constexpr (std::is_same_v<T, Abort>) {
          root.initAbort().setReason(text(v.reason));
        } else if constexpr (std::is_same_v<T, handoff::Serving>) {
          auto s = root.initServing();
          s.setPid(v.pid);
          s.setReverseStartLsn(v.reverse_start_lsn);
          auto l = s.initSections(static_cast<unsigned>(v.sections.size()));
          for (unsigned i = 0; i < v.sections.size(); ++i) {
            l[i].setName(text(v.sections[i].name));
            l[i].setVersion(v.sections[i].version);
          }
        } else if constexpr (std::is_same_v<T, handoff::Progress>) {
          auto p = root.initProgress();
          p.setAppliedLsn(v.applied_lsn);
          p.setEarlyFds(v.early_fds);
          fill(p.initProbes(), v.probes);
        } else if constexpr (std::is_same_v<T, handoff::Rollback>) {
          root.initRollback().setReason(text(v.reason));
        } else if constexpr (std::is_same_v<T, handoff::Promote>) {
          root.initPromote().setReason(text(v.reason));
        } else {
          static_assert(std::is_same_v<T, handoff::ShadowReport>, "encode every message type");
          auto s = root.initShadow();
          fill(s.initProbes(), v.probes);
          s.setVerdict(text(v.verdict));
          s.setDigestDone(v.digest_done);
          auto l = s.initDigests(static_cast<unsigned>(v.digests.size()));
          for (unsigned i = 0; i < v.digests.size(); ++i) {
            l[i].setName(text(v.digests[i].name));
            l[i].setVersion(v.digests[i].version);
            l[i].setSum(v.digests[i].sum);
            l[i].setEntries(v.digests[i].entries);
          }
        }
      },
      m);
  auto flat = capnp::messageToFlatArray(builder);
  auto bytes = flat.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

Result<Message> decode_message(std::string_view packet) {
  if (packet.size() % 8 != 0 || packet.size() < 16 || packet.size() > kMaxMessageBytes) {
    return Error(ErrorKind::kCorrupt, "control message of " + std::to_string(packet.size()) +
                                          " bytes is not a whole Cap'n Proto message");
  }
  // Copy into aligned words: a received packet's buffer has no alignment guarantee.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(packet.size() / 8);
  std::memcpy(words.begin(), packet.data(), packet.size());
  try {
    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = words.size() * 2 + 64;
    limits.nestingLimit = 8;
    capnp::FlatArrayMessageReader reader(words.asPtr(), limits);
    auto root = reader.getRoot<wire::Message>();
    switch (root.which()) {
      case wire::Message::HELLO: {
        auto h = root.getHello();
        Hello out;
        out.protocol_version = h.getProtocolVersion();
        out.pid = h.getPid();
        out.capabilities = texts(h.getCapabilities());
        for (auto s : h.getSections()) {
          out.sections.push_back(
              {str(s.getName()), s.getMinVersion(), s.getMaxVersion(), s.getTypeId()});
        }
        out.max_protocol_version = h.getMaxProtocolVersion();
        out.workers = h.getWorkers();
        return Message(std::move(out));
      }
      case wire::Message::WELCOME: {
        auto w = root.getWelcome();
        Welcome out{w.getProtocolVersion(), w.getGeneration(), texts(w.getCapabilities()), {}};
        for (auto s : w.getSchemas()) {
          out.schemas.push_back(
              {str(s.getName()), s.getVersion(), s.getTypeId(), str(s.getSchema())});
        }
        return Message(std::move(out));
      }
      case wire::Message::CHECKPOINT_READY: {
        auto c = root.getCheckpointReady();
        return Message(CheckpointReady{c.getStartLsn(), c.getBytes(), c.getWorkerSegments()});
      }
      case wire::Message::RESTORED: {
        auto r = root.getRestored();
        return Message(Restored{r.getRecords(), r.getRestoreUs()});
      }
      case wire::Message::FROZEN: {
        auto f = root.getFrozen();
        Frozen out{f.getFinalLsn(), f.getFdCount(), f.getFreezeStartUs(), {}, {}};
        for (auto s : f.getMetrics()) out.metrics.emplace_back(str(s.getSeries()), s.getValue());
        for (int64_t us : f.getWorkerFreezeUs()) out.worker_freeze_us.push_back(us);
        return Message(std::move(out));
      }
      case wire::Message::FD_BATCH:
        return Message(FdBatch{read(root.getFdBatch().getFds())});
      case wire::Message::EARLY_FDS:
        return Message(EarlyFds{read(root.getEarlyFds().getFds())});

      case wire::Message::PREPARED: {
        auto p = root.getPrepared();
        return Message(Prepared{p.getAppliedLsn(), p.getFdsReceived(), read(p.getProbes())});
      }
      case wire::Message::COMMIT: {
        auto c = root.getCommit();
        return Message(Commit{c.getGeneration(), read(c.getTimings()), c.getProbationMs(),
                              c.getDigestK0(), c.getDigestK1()});
      }
      case wire::Message::ABORT:
        return Message(Abort{str(root.getAbort().getReason())});
      case wire::Message::SERVING: {
        auto s = root.getServing();
        handoff::Serving out{s.getPid(), s.getReverseStartLsn(), {}};
        for (auto v : s.getSections()) out.sections.push_back({str(v.getName()), v.getVersion()});
        return Message(std::move(out));
      }
      case wire::Message::ROLLBACK:
        return Message(handoff::Rollback{str(root.getRollback().getReason())});
      case wire::Message::PROMOTE:
        return Message(handoff::Promote{str(root.getPromote().getReason())});
      case wire::Message::PROGRESS:
        return Message(handoff::Progress{root.getProgress().getAppliedLsn(),
                                         root.getProgress().getEarlyFds(),
                                         read(root.getProgress().getProbes())});
      case wire::Message::SHADOW: {
        auto s = root.getShadow();
        handoff::ShadowReport out{read(s.getProbes()), str(s.getVerdict()), s.getDigestDone(), {}};
        for (auto d : s.getDigests()) {
          out.digests.push_back({str(d.getName()), d.getVersion(), d.getSum(), d.getEntries()});
        }
        return Message(std::move(out));
      }

      default:
        return Error(ErrorKind::kVersion, "control message of unknown type " +
                                              std::to_string(static_cast<int>(root.which())) +
                                              " (a newer protocol than " +
                                              std::to_string(kProtocolVersion) + "?)");
    }
  } catch (const kj::Exception& e) {
    return Error(ErrorKind::kCorrupt,
                 std::string("control message does not parse: ") + e.getDescription().cStr());
  }
}

}  // namespace baton::serialization
