// Whole-file writes that never leave a half-written file behind: checkpoints, logs rewritten on
// resume, and reports go through here. Readers see either the old file or the complete new one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace pneumo {

// Writes to a temporary file in the same directory (so rename stays within one file system),
// fsyncs it, renames it over `path` and fsyncs the directory. Throws pneumo::Error naming the
// path and the system's reason (missing or unwritable directory, full disk, ...); the temporary
// file is removed on failure. A symbolic link stays and its target is replaced; something that
// is not a regular file (a FIFO, /dev/stdout) is written into directly, and so is the file the
// process's standard output or error goes to (after what was printed); a folder is refused.
void write_file_atomically(const std::string& path, const void* data, size_t size);
void write_file_atomically(const std::string& path, const std::string& text);

// Is `path` the file the process's standard output or error goes to (`--json /dev/stdout >>
// out.txt`, or the file's own name)? write_file_atomically appends to it rather than replacing it.
bool is_a_standard_stream_file(const std::string& path);

// Is `name` (a file name) one of the temporary files write_file_atomically makes beside its
// target ("<target>.tmp.XXXXXX")? One a killed process left behind is no file of its own.
bool is_atomic_write_temporary(const std::string& name);

// Flushes a written file's data to disk (fsync); throws pneumo::Error naming the file when the
// system cannot.
void sync_file(const std::string& path);

// Makes a directory's entries (files created, renamed or removed in it) durable: fsync on the
// directory. Some file systems refuse that; the files' data is unaffected, so it is not an error.
void sync_directory(const std::string& directory);

// Reads a whole file; throws pneumo::Error naming the path when it cannot: a file that is not a
// regular one (a FIFO is refused at once, not waited on), or of more than `most` bytes (refused
// before anything is read or allocated).
std::vector<uint8_t> read_file_bytes(const std::string& path,
                                     uint64_t most = std::numeric_limits<uint64_t>::max());
// The same, as text.
std::string read_file_text(const std::string& path,
                           uint64_t most = std::numeric_limits<uint64_t>::max());

}  // namespace pneumo
