// The file-system seam: how whole jobs (src/ops) and the chain opener reach
// files by name. Jobs take a FileSystem&, never call the OS, so that each of
// them runs on the POSIX file system (the commands), on memory (unit tests),
// or on memory whose files fail or "crash" at a chosen write (crash tests).
//
// Thread safety: none; one job uses a FileSystem from one thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/file.h"
#include "util/status.h"

namespace qdedup::io {

// How an image is locked, mirroring QEMU's file-posix driver (see
// docs/locking.md): OFD byte-range locks on bytes 100+perm ("I hold perm") and
// 200+perm ("I do not share perm").
enum class LockMode {
  kNone,         // no locking at all (temporary files nobody else knows about)
  kForceShare,   // read-only, -U: hold "consistent read" only, share everything
  kRead,         // read-only: refuse if someone writes; forbid writers while open
  kWrite,        // read-write: exclusive writer, as a running QEMU takes it
};

struct OpenOptions {
  bool writable = false;
  bool create = false;            // create if missing (O_CREAT)
  bool exclusive = false;         // with create: fail if it exists (O_EXCL)
  bool require_regular = false;   // refuse devices, FIFOs, directories
  LockMode lock = LockMode::kNone;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Opens (or creates) `path`. A missing file is StatusCode::kNotFound.
  virtual Result<std::unique_ptr<File>> open(const std::string& path,
                                             const OpenOptions& options) = 0;
  // An anonymous file in directory `dir` that vanishes when closed (scratch).
  virtual Result<std::unique_ptr<File>> open_scratch(const std::string& dir) = 0;
  // Atomically renames `from` to `to`, replacing `to`; makes the rename
  // durable unless `sync_directory` is false (qemu-img's "unsafe" cache mode).
  virtual Status rename(const std::string& from, const std::string& to, bool sync_directory) = 0;
  // Removes a file; errors are ignored (clean-up after a failure).
  virtual void remove(const std::string& path) = 0;
  virtual bool exists(const std::string& path) = 0;
  // A name that is the same for every spelling of the same file (for loop
  // detection in backing chains); `path` itself where that cannot be told.
  virtual std::string canonical_name(const std::string& path) { return path; }
};

// The operating system's file system (PosixFile underneath).
FileSystem& posix_file_system();

// Files held in memory, by name. Files stay after they are closed; a File
// opened from here forwards to the stored one, so a test can look at or
// change a file while a job has it open. Locks are not modelled.
class MemoryFileSystem : public FileSystem {
 public:
  // Makes the files created from now on (open with create, open_scratch)
  // with `make` instead of as MemoryFiles: e.g. FaultyFiles for crash tests.
  using Factory = std::function<std::unique_ptr<File>(const std::string& name)>;
  void set_new_file_factory(Factory make) { make_ = std::move(make); }

  // Adds (or replaces) a file.
  void add(const std::string& path, std::unique_ptr<File> file);
  void add_bytes(const std::string& path, std::vector<uint8_t> bytes);
  // The stored file, or nullptr.
  File* find(const std::string& path);
  // The whole content of a stored file (empty if missing).
  std::vector<uint8_t> bytes(const std::string& path);
  // Every stored name, in order (scratch files are not stored by name).
  std::vector<std::string> names() const;

  Result<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& options) override;
  Result<std::unique_ptr<File>> open_scratch(const std::string& dir) override;
  Status rename(const std::string& from, const std::string& to, bool sync_directory) override;
  void remove(const std::string& path) override;
  bool exists(const std::string& path) override { return files_.count(path) != 0; }

 private:
  std::unique_ptr<File> make_file(const std::string& name);

  std::map<std::string, std::shared_ptr<File>> files_;
  Factory make_;
};

// A fresh name in the directory of `target`, for writing a file that is then
// renamed over `target` (".NAME.qdedup-RANDOM").
std::string temporary_name_beside(const std::string& target);
// The directory part of `path` ("." if none).
std::string directory_of(const std::string& path);
// The part of `path` after its last slash.
std::string base_name(const std::string& path);

// A new file written beside `target` and renamed over it by commit(), so that
// a failed or interrupted job never leaves a half-written file under
// `target`'s name and never damages an existing `target`, which stays locked
// for writing (refused if another program uses it) until the rename.
// Destroyed without a successful commit(), it removes the new file.
class FileBeside {
 public:
  static Result<std::unique_ptr<FileBeside>> begin(FileSystem& fs, const std::string& target);
  ~FileBeside();
  FileBeside(const FileBeside&) = delete;
  FileBeside& operator=(const FileBeside&) = delete;

  // The new file, once: the caller writes it and closes it before commit().
  std::unique_ptr<File> take_file() { return std::move(file_); }
  const std::string& temporary_path() const { return tmp_; }
  // Renames the new file over the target (see FileSystem::rename).
  Status commit(bool sync_directory);

 private:
  FileBeside(FileSystem& fs, std::string target) : fs_(fs), target_(std::move(target)) {}

  FileSystem& fs_;
  std::string target_;
  std::string tmp_;
  std::unique_ptr<File> guard_;  // the write lock on the file being replaced
  std::unique_ptr<File> file_;
  bool committed_ = false;
};

}  // namespace qdedup::io
