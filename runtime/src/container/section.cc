// Migrations, Section's peer-version negotiation and the Registry.
#include "baton/section.h"

namespace baton {

Result<void> Migrations::add(uint32_t from, uint32_t to, MigrationFn fn) {
  if (from == to || (from + 1 != to && to + 1 != from)) {
    return Error(ErrorKind::kInvalidArgument,
                 "a migration must join adjacent schema versions, got " + std::to_string(from) +
                     " -> " + std::to_string(to));
  }
  steps_[{from, to}] = std::move(fn);
  return ok();
}

Result<std::vector<const MigrationFn*>> Migrations::path(std::string_view section, uint32_t from,
                                                         uint32_t to) const {
  std::vector<const MigrationFn*> out;
  for (uint32_t v = from; v != to;) {
    uint32_t next = from < to ? v + 1 : v - 1;
    auto it = steps_.find({v, next});
    if (it == steps_.end()) {
      return Error(ErrorKind::kVersion,
                   "section '" + std::string(section) + "': checkpoint has schema version " +
                       std::to_string(from) + ", this build has version " + std::to_string(to) +
                       " and no migration " + std::to_string(v) + " -> " + std::to_string(next));
    }
    out.push_back(&it->second);
    v = next;
  }
  return out;
}

Result<void> Section::set_peer_version(uint32_t peer_version) {
  BATON_ASSIGN_OR_RETURN(path_, migrations_.path(name_, peer_version, schema_version_));
  peer_version_ = peer_version;
  return ok();
}

Result<void> Registry::add(Section& section) {
  if (section.name().empty() || section.name().size() > kMaxNameBytes) {
    return Error(ErrorKind::kInvalidArgument, "section name '" + section.name() +
                                                  "' must be 1 to " +
                                                  std::to_string(kMaxNameBytes) + " bytes");
  }
  if (find(section.name()) != nullptr) {
    return Error(ErrorKind::kInvalidArgument,
                 "section '" + section.name() + "' is already registered");
  }
  if (sections_.size() >= kMaxSections) {
    return Error(ErrorKind::kCapacity,
                 "at most " + std::to_string(kMaxSections) + " sections can be registered");
  }
  section.attach(&log_, static_cast<uint16_t>(first_id_ + sections_.size()));
  sections_.push_back(&section);
  return ok();
}

Section* Registry::find(std::string_view name) const {
  for (Section* s : sections_)
    if (s->name() == name) return s;
  return nullptr;
}

}  // namespace baton
