#include "io/file_system.h"

#include <climits>
#include <cstdlib>
#include <random>

#include "io/memory_file.h"
#include "io/posix_file.h"

namespace qdedup::io {

namespace {

class PosixFileSystem : public FileSystem {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& options) override {
    QD_ASSIGN_OR_RETURN(auto f, PosixFile::open(path, options));
    return std::unique_ptr<File>(std::move(f));
  }
  Result<std::unique_ptr<File>> open_scratch(const std::string& dir) override {
    QD_ASSIGN_OR_RETURN(auto f, PosixFile::open_temporary(dir));
    return std::unique_ptr<File>(std::move(f));
  }
  Status rename(const std::string& from, const std::string& to, bool sync_directory) override {
    return rename_file(from, to, sync_directory);
  }
  void remove(const std::string& path) override { remove_file(path); }
  bool exists(const std::string& path) override { return file_exists(path); }
  std::string canonical_name(const std::string& path) override {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) != nullptr) return buf;
    return path;
  }
};

// A File of a MemoryFileSystem: keeps the stored file alive while open, even
// if it is renamed or removed meanwhile (as an open POSIX file is).
class SharedFile : public File {
 public:
  explicit SharedFile(std::shared_ptr<File> target) : target_(std::move(target)) {}

  const std::string& name() const override { return target_->name(); }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override {
    return target_->pread(offset, buf);
  }
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override {
    return target_->pwrite(offset, buf);
  }
  Status flush() override { return target_->flush(); }
  Result<uint64_t> size() override { return target_->size(); }
  Status truncate(uint64_t size) override { return target_->truncate(size); }
  Status punch_hole(uint64_t offset, uint64_t len) override {
    return target_->punch_hole(offset, len);
  }
  Result<uint64_t> allocated_size() override { return target_->allocated_size(); }
  Result<FileExtent> extent_at(uint64_t offset) override { return target_->extent_at(offset); }
  bool concurrent_reads() const override { return target_->concurrent_reads(); }
  bool thread_safe() const override { return target_->thread_safe(); }

 private:
  std::shared_ptr<File> target_;
};

}  // namespace

FileSystem& posix_file_system() {
  static PosixFileSystem fs;
  return fs;
}

std::unique_ptr<File> MemoryFileSystem::make_file(const std::string& name) {
  if (make_) return make_(name);
  return std::make_unique<MemoryFile>(name);
}

void MemoryFileSystem::add(const std::string& path, std::unique_ptr<File> file) {
  files_[path] = std::shared_ptr<File>(std::move(file));
}

void MemoryFileSystem::add_bytes(const std::string& path, std::vector<uint8_t> bytes) {
  add(path, std::make_unique<MemoryFile>(path, std::move(bytes)));
}

File* MemoryFileSystem::find(const std::string& path) {
  auto it = files_.find(path);
  return it == files_.end() ? nullptr : it->second.get();
}

std::vector<uint8_t> MemoryFileSystem::bytes(const std::string& path) {
  File* f = find(path);
  if (f == nullptr) return {};
  Result<uint64_t> size = f->size();
  if (!size) return {};
  std::vector<uint8_t> out(*size);
  if (!f->read_or_zero(0, out)) return {};
  return out;
}

std::vector<std::string> MemoryFileSystem::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : files_) out.push_back(name);
  return out;
}

Result<std::unique_ptr<File>> MemoryFileSystem::open(const std::string& path,
                                                     const OpenOptions& options) {
  auto it = files_.find(path);
  if (it == files_.end()) {
    if (!options.create) return Status(StatusCode::kNotFound, "No such file or directory");
    it = files_.emplace(path, std::shared_ptr<File>(make_file(path))).first;
  } else if (options.create && options.exclusive) {
    return io_error("cannot open: File exists");
  }
  return std::unique_ptr<File>(std::make_unique<SharedFile>(it->second));
}

Result<std::unique_ptr<File>> MemoryFileSystem::open_scratch(const std::string& dir) {
  return make_file(dir + "/(scratch)");
}

Status MemoryFileSystem::rename(const std::string& from, const std::string& to, bool) {
  auto it = files_.find(from);
  if (it == files_.end()) return io_error("rename: No such file or directory");
  std::shared_ptr<File> f = it->second;
  files_.erase(it);
  files_[to] = std::move(f);
  return Status::ok();
}

void MemoryFileSystem::remove(const std::string& path) { files_.erase(path); }

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string temporary_name_beside(const std::string& target) {
  std::random_device rd;
  auto slash = target.rfind('/');
  std::string dir = slash == std::string::npos ? "" : target.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  return dir + "." + base + ".qdedup-" + std::to_string(rd());
}

Result<std::unique_ptr<FileBeside>> FileBeside::begin(FileSystem& fs, const std::string& target) {
  std::unique_ptr<FileBeside> b(new FileBeside(fs, target));
  if (fs.exists(target)) {
    // Replaced at the end, as qemu-img does; never while someone uses it.
    OpenOptions oo{.writable = true, .require_regular = true, .lock = LockMode::kWrite};
    QD_ASSIGN_OR_RETURN(b->guard_, fs.open(target, oo));
  }
  std::string tmp = temporary_name_beside(target);
  OpenOptions oo{.writable = true, .create = true, .exclusive = true};
  QD_ASSIGN_OR_RETURN(b->file_, fs.open(tmp, oo));
  b->tmp_ = std::move(tmp);
  return b;
}

FileBeside::~FileBeside() {
  file_.reset();
  if (!committed_ && !tmp_.empty()) fs_.remove(tmp_);
}

Status FileBeside::commit(bool sync_directory) {
  file_.reset();
  QD_TRY(fs_.rename(tmp_, target_, sync_directory));
  committed_ = true;
  return Status::ok();
}

}  // namespace qdedup::io
