// What keeps a command from losing work: SIGINT/SIGTERM turned into a flag the training loop
// polls between steps, out-of-memory errors turned into advice about the batch size, and the
// checks that keep an output from replacing a run's state or landing inside its own input.
#pragma once

#include <atomic>
#include <string>

#include "pneumo/error.hpp"

namespace pneumo::cli {

// While alive, the first SIGINT or SIGTERM only sets stop() (the loop finishes its step, writes a
// checkpoint and exits). Another signal ends the process at once by its default action, except
// the same signal within a second of the first: that is one request delivered twice (a runner
// forwarding what a scheduler or a process-group kill also sent) and is ignored. The previous
// handlers come back on destruction, except that the signal which stopped the run stays ignored
// (its echo must not kill the exit). One instance at a time. With `announce` the first signal is
// said on stderr at once (rank 0 speaks for a run of several processes).
class StopOnSignal {
 public:
  explicit StopOnSignal(bool announce = true);
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  const std::atomic<bool>& stop() const;
  int signal_number() const;       // the signal that set stop(), or 0
  const char* signal_name() const;  // "SIGINT", "SIGTERM" or ""
};

const char* stop_signal_name(int signal);  // "SIGINT", "SIGTERM" or "" (another number)

// Outside a StopOnSignal (the start of train while images are decoded, prepare, evaluate, ...) a
// SIGINT or SIGTERM ends the command at once, as by default, after one line on stderr that says
// so (the shell's status is still 130 / 143); under mpirun rank 0 alone says it. Installed once,
// at the start of main.
void say_when_a_signal_ends_the_command();

// "out of GPU memory with batch size 256: <what failed>; try ... --batch 128": the message for an
// allocation that failed while running with `batch` images per step.
std::string out_of_memory_advice(const OutOfMemory& error, int batch, const std::string& flag);

// An output folder that must be new or empty (what a command writes there would mix with what
// is already in it): throws "<what> '<folder>' is a file, not a folder: give a new or empty
// <flag>" or "... is not empty: give a new or empty <flag> (<why>)".
void require_new_or_empty_folder(const std::string& folder, const std::string& what,
                                 const std::string& flag, const std::string& why);

// An output file (evaluate --json / --scores, bench kernels --json / --csv) may replace an
// earlier output, never pneumo's own state: throws a UsageError naming `flag` when `path` (or the
// file a link at `path` names) is a safetensors file (a model or checkpoint), one of the files
// train writes in a run directory (config.json beside checkpoints/ or .lock), any file of its
// checkpoints/ folder, one of a prepared cache's files, or an image (by its name, as an image
// tree's files are read: an X-ray replaced by CSV is lost).
void refuse_replacing_pneumo_state(const std::string& path, const std::string& flag);

// What an output file holds, to tell an earlier output of the same flag from a user's file.
enum class OutputFile { EvaluateJson, EvaluateScores, BenchJsonLines, BenchCsv };

// Checks an output file (`flag` `path`; none when empty) before any work: its folder exists
// (Error), it is not a folder (Error), it is none of pneumo's state (refuse_replacing_pneumo_state),
// and an existing non-empty regular file (through a link, the file it names) is an earlier output
// of this kind (evaluate --json: a JSON object with split, count and default_threshold; --scores:
// the scores header; bench kernels: a row of its JSON lines or its CSV header), which is replaced;
// anything else is a user's file, refused with a UsageError naming it. /dev/null, a pipe and an
// empty file are written.
void check_output_file(const std::string& path, const std::string& flag, OutputFile kind);

// An output (a file or a folder) of a command that reads `data` (an image tree or a prepared
// cache) where it would become part of that data: anywhere in a cache (`prepare` could not
// refresh a cache holding it), inside a tree's split folders (train/, val/, test/: the images
// are read there), or, for an output of images (`writes_images`: a gallery's PNGs), anywhere in
// a tree (a predict or explain of it walks every folder). Throws a UsageError that starts with
// `what` ("--json metrics.json").
void refuse_output_inside_data(const std::string& output, const std::string& what,
                               const std::string& data, bool writes_images = false);

// Do `a` and `b` (neither "") name one file? Two spellings of a file that does not exist yet
// (a.json, ./a.json) are told by their normalised absolute paths; links and hard links to an
// existing one by std::filesystem::equivalent. For two outputs of one command, or an output and
// an input: one of them would be lost.
bool same_output_file(const std::string& a, const std::string& b);

}  // namespace pneumo::cli
