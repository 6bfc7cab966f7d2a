// CudaBackend::report: what the backend decided by itself, as JSON for `pneumo bench train` and
// any other report: cuDNN's algorithm searches (per direction, the algorithm kept, the fastest that
// ran, every trial as cuDNN timed it) and each place it timed cuDNN against a kernel of ours.
#include <nlohmann/json.hpp>

#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_raii.hpp"

namespace pneumo {

namespace {

nlohmann::json conv_searches_json(const std::vector<ConvSearch>& searches_made, int batch) {
  nlohmann::json searches = nlohmann::json::array();
  for (const ConvSearch& search : searches_made) {
    if (search.shape[0] != batch) continue;
    const ConvAlgorithmPick& pick = search.pick;
    nlohmann::json trials = nlohmann::json::array(), chosen, fastest;
    for (size_t i = 0; i < pick.trials.size(); ++i) {
      const ConvAlgoTrial& t = pick.trials[i];
      const bool ran = t.status == CUDNN_STATUS_SUCCESS;
      nlohmann::json trial = {{"algo", t.algo},
                              {"ran", ran},
                              {"ms", t.ms},
                              {"workspace_bytes", t.workspace},
                              {"deterministic", t.deterministic},
                              {"math", cuda::math_type_name(t.math)}};
      // The kept entry itself: an algorithm id may appear under two math types, with two times.
      if (static_cast<int>(i) == pick.kept) chosen = trial;
      // The fastest that ran, usable here or not (over the workspace limit, a math type the
      // precision refuses): what the choice gave up, in time.
      if (ran && fastest.is_null()) fastest = trial;
      trials.push_back(trial);
    }
    if (pick.trials.empty()) chosen = {{"algo", pick.algo}};  // from the tuning cache
    searches.push_back({{"shape", search.shape},
                        {"direction", search.direction},
                        {"source", pick.source},
                        {"chosen", chosen},
                        {"fastest", fastest},
                        {"trials", trials}});
  }
  return searches;
}

nlohmann::json implementation_choices_json(const std::vector<ImplementationChoice>& made,
                                           int batch) {
  nlohmann::json choices = nlohmann::json::array();
  for (const ImplementationChoice& c : made)
    if (c.input[0] == batch)
      choices.push_back({{"op", c.op},
                         {"input", c.input},
                         {"runs", c.op.find("graph API") != std::string::npos
                                      ? (c.kernel ? "graph engine" : "legacy pick")
                                      : (c.kernel ? "kernel" : "cudnn")},
                         {"cudnn_ms", c.cudnn_ms},
                         {"kernel_ms", c.kernel_ms},
                         {"rejected", c.rejected},
                         {"source", c.source}});
  return choices;
}

}  // namespace

nlohmann::json CudaBackend::report(int batch) const {
  return {{"conv_searches", conv_searches_json(conv_searches(), batch)},
          {"implementation_choices", implementation_choices_json(implementation_choices(), batch)},
          {"tuning_cache", tuning_.report()}};
}

}  // namespace pneumo
