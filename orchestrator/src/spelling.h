#pragma once
// "did you mean ...?" for unknown sweep keys and command placeholders: the closest known name by
// Levenshtein distance, if any is close enough to be a misspelling.
#include <string>
#include <string_view>
#include <vector>

namespace moesweep::orchestrator {

// Insertions, deletions and substitutions that turn a into b.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The known name nearest to `word` within max(2, |word|/3) edits (the first on a tie); empty if none.
std::string closest_name(std::string_view word, const std::vector<std::string>& known);

}  // namespace moesweep::orchestrator
