// PosixFile: open modes, I/O, sizes, and QEMU-compatible OFD image locks.
#include "io/posix_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <vector>

#include "support/scratch_dir.h"

namespace qdedup::io {
namespace {

using image_builder::ScratchDir;

OpenOptions create_rw() {
  OpenOptions o;
  o.writable = true;
  o.create = true;
  return o;
}

OpenOptions locked(LockMode mode) {
  OpenOptions o;
  o.writable = mode == LockMode::kWrite;
  o.lock = mode;
  return o;
}

std::unique_ptr<PosixFile> must_open(const std::string& path, const OpenOptions& o) {
  auto r = PosixFile::open(path, o);
  INFO(path << ": " << r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// A file of `n` bytes for the locking tests.
void make_file(const std::string& path, size_t n) {
  auto f = must_open(path, create_rw());
  REQUIRE(f->pwrite(0, std::vector<uint8_t>(n, 0x5a)).is_ok());
}

}  // namespace

TEST_CASE("PosixFile creates, writes, reads back and reports the size", "[io][posix]") {
  ScratchDir dir;
  REQUIRE_FALSE(dir.path().empty());
  std::string path = dir.file("a.img");
  CHECK_FALSE(file_exists(path));
  auto f = must_open(path, create_rw());
  CHECK(f->name() == path);
  CHECK(file_exists(path));
  std::vector<uint8_t> data = {1, 2, 3, 4, 5};
  REQUIRE(f->pwrite(10, data).is_ok());
  auto size = f->size();
  REQUIRE(size.is_ok());
  CHECK(*size == 15);
  std::vector<uint8_t> buf(8, 0xee);
  auto n = f->pread(8, buf);
  REQUIRE(n.is_ok());
  CHECK(*n == 7);  // short only at end of file
  CHECK(buf == std::vector<uint8_t>{0, 0, 1, 2, 3, 4, 5, 0xee});
  CHECK(f->flush().is_ok());
  auto past = f->pread(100, buf);
  REQUIRE(past.is_ok());
  CHECK(*past == 0);
}

TEST_CASE("PosixFile truncate shrinks and extends with zeros", "[io][posix]") {
  ScratchDir dir;
  auto f = must_open(dir.file("t.img"), create_rw());
  REQUIRE(f->pwrite(0, std::vector<uint8_t>(100, 7)).is_ok());
  REQUIRE(f->truncate(10).is_ok());
  CHECK(*f->size() == 10);
  REQUIRE(f->truncate(4096).is_ok());
  CHECK(*f->size() == 4096);
  std::vector<uint8_t> buf(20);
  REQUIRE(f->read_exact(0, buf, "test").is_ok());
  CHECK(buf[9] == 7);
  CHECK(buf[10] == 0);
}

TEST_CASE("PosixFile allocated_size counts written blocks, not holes", "[io][posix]") {
  ScratchDir dir;
  auto f = must_open(dir.file("sparse.img"), create_rw());
  constexpr uint64_t kMiB = 1 << 20;
  REQUIRE(f->truncate(4 * kMiB).is_ok());
  auto sparse = f->allocated_size();
  REQUIRE(sparse.is_ok());
  CHECK(*sparse < 4 * kMiB);
  REQUIRE(f->pwrite(0, std::vector<uint8_t>(kMiB, 0x11)).is_ok());
  REQUIRE(f->flush().is_ok());
  auto written = f->allocated_size();
  REQUIRE(written.is_ok());
  CHECK(*written >= kMiB);
  CHECK(*f->size() == 4 * kMiB);
}

TEST_CASE("PosixFile punch_hole reads back as zeros and keeps the size", "[io][posix]") {
  ScratchDir dir;
  auto f = must_open(dir.file("p.img"), create_rw());
  REQUIRE(f->pwrite(0, std::vector<uint8_t>(3 * 65536, 0x22)).is_ok());
  REQUIRE(f->punch_hole(65536, 65536).is_ok());
  CHECK(*f->size() == 3 * 65536);
  std::vector<uint8_t> buf(3 * 65536);
  REQUIRE(f->read_exact(0, buf, "test").is_ok());
  CHECK(buf[65535] == 0x22);
  CHECK(buf[65536] == 0);
  CHECK(buf[2 * 65536 - 1] == 0);
  CHECK(buf[2 * 65536] == 0x22);
}

TEST_CASE("PosixFile exclusive create refuses an existing file", "[io][posix]") {
  ScratchDir dir;
  std::string path = dir.file("x.img");
  make_file(path, 3);
  OpenOptions o = create_rw();
  o.exclusive = true;
  auto r = PosixFile::open(path, o);
  REQUIRE_FALSE(r.is_ok());
  CHECK_THAT(r.status().message(), Catch::Contains("exists"));
  // The existing file is untouched.
  auto f = must_open(path, OpenOptions{});
  CHECK(*f->size() == 3);
  // Exclusive create of a new name works.
  CHECK(PosixFile::open(dir.file("new.img"), o).is_ok());
}

TEST_CASE("PosixFile open of a missing file is NotFound and creates nothing", "[io][posix]") {
  ScratchDir dir;
  std::string path = dir.file("missing.img");
  auto r = PosixFile::open(path, OpenOptions{});
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kNotFound);
  OpenOptions rw;
  rw.writable = true;
  CHECK(PosixFile::open(path, rw).status().code() == StatusCode::kNotFound);
  CHECK_FALSE(file_exists(path));
}

TEST_CASE("PosixFile refuses to open a directory", "[io][posix]") {
  ScratchDir dir;
  auto ro = PosixFile::open(dir.path(), OpenOptions{});
  REQUIRE_FALSE(ro.is_ok());
  CHECK(ro.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(ro.status().message(), Catch::Contains("directory"));
  OpenOptions rw;
  rw.writable = true;
  auto w = PosixFile::open(dir.path(), rw);
  REQUIRE_FALSE(w.is_ok());
  CHECK(w.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("PosixFile require_regular refuses character devices", "[io][posix]") {
  OpenOptions o;
  o.require_regular = true;
  auto r = PosixFile::open("/dev/null", o);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(PosixFile::open("/dev/null", OpenOptions{}).is_ok());
}

TEST_CASE("PosixFile writes through a read-only open fail with an I/O error", "[io][posix]") {
  ScratchDir dir;
  std::string path = dir.file("ro.img");
  make_file(path, 4);
  auto f = must_open(path, OpenOptions{});
  Status s = f->pwrite(0, std::vector<uint8_t>{1});
  CHECK(s.code() == StatusCode::kIoError);
  CHECK_FALSE(s.message().empty());
}

TEST_CASE("rename_file moves a file into place", "[io][posix]") {
  ScratchDir dir;
  make_file(dir.file("tmp.img"), 5);
  make_file(dir.file("target.img"), 1);
  REQUIRE(rename_file(dir.file("tmp.img"), dir.file("target.img")).is_ok());
  CHECK_FALSE(file_exists(dir.file("tmp.img")));
  CHECK(*must_open(dir.file("target.img"), OpenOptions{})->size() == 5);
  CHECK_FALSE(rename_file(dir.file("gone.img"), dir.file("target.img")).is_ok());
  remove_file(dir.file("target.img"));
  CHECK_FALSE(file_exists(dir.file("target.img")));
}

TEST_CASE("rename_file without a directory sync swaps names, then unlinks the old file",
          "[io][posix]") {
  ScratchDir dir;
  // Replacing a regular file (renameat2 RENAME_EXCHANGE, then unlink).
  make_file(dir.file("tmp.img"), 5);
  make_file(dir.file("target.img"), 1);
  REQUIRE(rename_file(dir.file("tmp.img"), dir.file("target.img"), false).is_ok());
  CHECK_FALSE(file_exists(dir.file("tmp.img")));
  CHECK(*must_open(dir.file("target.img"), OpenOptions{})->size() == 5);
  // No target: a plain rename.
  make_file(dir.file("tmp2.img"), 3);
  REQUIRE(rename_file(dir.file("tmp2.img"), dir.file("new.img"), false).is_ok());
  CHECK_FALSE(file_exists(dir.file("tmp2.img")));
  CHECK(*must_open(dir.file("new.img"), OpenOptions{})->size() == 3);
  // A directory in the way is never swapped away: rename's own error.
  REQUIRE(::mkdir(dir.file("d.img").c_str(), 0755) == 0);
  make_file(dir.file("tmp3.img"), 2);
  CHECK_FALSE(rename_file(dir.file("tmp3.img"), dir.file("d.img"), false).is_ok());
  CHECK(file_exists(dir.file("tmp3.img")));
  struct stat st;
  REQUIRE(::stat(dir.file("d.img").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
}

// OFD locks belong to the open file description, so two opens in one process
// conflict exactly as two processes would (QEMU relies on the same).
TEST_CASE("a write-locked image refuses a second writer and readers but not -U",
          "[io][posix][lock]") {
  ScratchDir dir;
  std::string path = dir.file("w.img");
  make_file(path, 512);
  auto writer = must_open(path, locked(LockMode::kWrite));

  auto second_writer = PosixFile::open(path, locked(LockMode::kWrite));
  REQUIRE_FALSE(second_writer.is_ok());
  CHECK(second_writer.status().code() == StatusCode::kBusy);
  CHECK_FALSE(second_writer.status().message().empty());

  auto reader = PosixFile::open(path, locked(LockMode::kRead));
  REQUIRE_FALSE(reader.is_ok());
  CHECK(reader.status().code() == StatusCode::kBusy);

  auto shared = PosixFile::open(path, locked(LockMode::kForceShare));
  CHECK(shared.is_ok());
  auto unlocked = PosixFile::open(path, locked(LockMode::kNone));
  CHECK(unlocked.is_ok());
}

TEST_CASE("read locks coexist but keep writers out", "[io][posix][lock]") {
  ScratchDir dir;
  std::string path = dir.file("r.img");
  make_file(path, 512);
  auto r1 = must_open(path, locked(LockMode::kRead));
  auto r2 = PosixFile::open(path, locked(LockMode::kRead));
  CHECK(r2.is_ok());
  auto w = PosixFile::open(path, locked(LockMode::kWrite));
  REQUIRE_FALSE(w.is_ok());
  CHECK(w.status().code() == StatusCode::kBusy);
  CHECK(PosixFile::open(path, locked(LockMode::kForceShare)).is_ok());
}

TEST_CASE("a -U reader does not keep a writer out", "[io][posix][lock]") {
  ScratchDir dir;
  std::string path = dir.file("u.img");
  make_file(path, 512);
  auto shared = must_open(path, locked(LockMode::kForceShare));
  auto w = PosixFile::open(path, locked(LockMode::kWrite));
  CHECK(w.is_ok());
}

TEST_CASE("closing a locked image releases its locks", "[io][posix][lock]") {
  ScratchDir dir;
  std::string path = dir.file("c.img");
  make_file(path, 512);
  {
    auto writer = must_open(path, locked(LockMode::kWrite));
    REQUIRE_FALSE(PosixFile::open(path, locked(LockMode::kWrite)).is_ok());
  }
  CHECK(PosixFile::open(path, locked(LockMode::kWrite)).is_ok());
  {
    auto reader = must_open(path, locked(LockMode::kRead));
    REQUIRE_FALSE(PosixFile::open(path, locked(LockMode::kWrite)).is_ok());
  }
  CHECK(PosixFile::open(path, locked(LockMode::kWrite)).is_ok());
}

TEST_CASE("image locks sit on QEMU's lock bytes", "[io][posix][lock]") {
  // A writer holds bytes 100 (consistent read), 101 (write), 103 (resize) and
  // denies 201 (write) and 203 (resize): what qemu-img/QEMU test for.
  ScratchDir dir;
  std::string path = dir.file("q.img");
  make_file(path, 512);
  auto writer = must_open(path, locked(LockMode::kWrite));
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  auto held = [&](off_t byte) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    REQUIRE(fcntl(fd, F_OFD_GETLK, &fl) == 0);
    return fl.l_type != F_UNLCK;
  };
  CHECK(held(100));
  CHECK(held(101));
  CHECK_FALSE(held(102));
  CHECK(held(103));
  CHECK_FALSE(held(200));
  CHECK(held(201));
  CHECK(held(203));
  ::close(fd);
}

}  // namespace qdedup::io
