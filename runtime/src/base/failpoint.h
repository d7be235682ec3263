// Fail points: named places where tests break the handoff on purpose. Compiled into
// every build, armed only by BATON_FAILPOINTS=name=crash|hang|error[,...].
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "baton/result.h"

namespace baton {

class FailPoints {
 public:
  enum class Action { kNone, kCrash, kHang, kError, kDelay };

  /// Parses "name=action,...". An unknown action is an error naming it.
  static Result<FailPoints> parse(std::string_view spec);

  Action at(std::string_view name) const;
  /// If `name` is armed: crash (SIGKILL to self), hang (until killed), or return an
  /// kAborted error naming the point. Otherwise ok.
  Result<void> hit(std::string_view name) const;
  bool empty() const { return armed_.empty(); }

 private:
  std::map<std::string, Action, std::less<>> armed_;
};

}  // namespace baton
