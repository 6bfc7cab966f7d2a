// `pneumo eda` in a build without OpenCV: the report needs OpenCV to write PNGs, so the entry
// point exists (the command links everywhere) and says what to do instead.
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

#ifndef PNEUMO_WITH_OPENCV
EdaReport run_eda(const EdaOptions& options) {
  throw Error("eda: this build of pneumo has no OpenCV, which the report needs to write its "
              "PNG grids; run `pneumo eda --data " + options.data +
              "` on a machine with OpenCV");
}
#endif

}  // namespace pneumo
