// The on-disk layout read here is LMDB 0.9's (liblmdb 0.9.x, data version 1, 64-bit
// page numbers), as mdb.c defines it: every page starts with a 16-byte header (page
// number, pad, flags, then lower/upper free-space bounds or an overflow page count),
// pages 0 and 1 are the meta pages, branch and leaf pages hold an array of 16-bit node
// offsets after the header, and a node is 8 bytes (two 16-bit halves of the data size
// or child page number, flags, key size) followed by the key and the data.
#include "cache/lmdb_file_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fmt/format.h>
#include <string_view>
#include <vector>

#include "cache/lmdb_record.h"

namespace smtpscreen {
namespace {

constexpr uint32_t kMagic = 0xBEEFC0DE;
constexpr uint32_t kDataVersion = 1;
constexpr size_t kPageHeader = 16;
constexpr size_t kNodeHeader = 8;
constexpr size_t kMetaBytes = kPageHeader + 136;  // what LMDB itself reads of a meta page
constexpr uint64_t kNoPage = ~uint64_t{0};
constexpr unsigned kMaxDepth = 32;        // LMDB's cursor stack
constexpr size_t kMaxKeySize = 511;       // LMDB's default key size limit
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 40;

constexpr uint16_t kBranch = 0x01, kLeaf = 0x02, kOverflow = 0x04, kMetaPage = 0x08;
constexpr uint16_t kPageKinds = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40;  // branch .. sub-page
constexpr uint16_t kBigData = 0x01;       // node data lives in overflow pages

uint16_t load16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load32(const unsigned char* p) { return load16(p) | (static_cast<uint32_t>(load16(p + 2)) << 16); }
uint64_t load64(const unsigned char* p) { return load32(p) | (static_cast<uint64_t>(load32(p + 4)) << 32); }

struct Db {
    uint16_t flags = 0, depth = 0;
    uint64_t branch_pages = 0, leaf_pages = 0, overflow_pages = 0, entries = 0, root = kNoPage;
};

struct Meta {
    uint16_t page_flags = 0;
    uint32_t magic = 0, version = 0, page_size = 0;
    Db dbs[2];  // 0: LMDB's free list, 1: the records
    uint64_t last_page = 0, txnid = 0;
};

Db parse_db(const unsigned char* p) {
    Db d;
    d.flags = load16(p + 4);
    d.depth = load16(p + 6);
    d.branch_pages = load64(p + 8);
    d.leaf_pages = load64(p + 16);
    d.overflow_pages = load64(p + 24);
    d.entries = load64(p + 32);
    d.root = load64(p + 40);
    return d;
}

Meta parse_meta(const unsigned char* page) {
    Meta m;
    m.page_flags = load16(page + 10);
    const unsigned char* p = page + kPageHeader;
    m.magic = load32(p);
    m.version = load32(p + 4);
    m.dbs[0] = parse_db(p + 24);
    m.dbs[1] = parse_db(p + 72);
    m.page_size = load32(p + 24);  // LMDB keeps the page size in the free list's pad field
    m.last_page = load64(p + 120);
    m.txnid = load64(p + 128);
    return m;
}

bool all_zero(const unsigned char* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (p[i] != 0) return false;
    return true;
}

// LMDB's default key order: bytes compared as unsigned, then the shorter first.
int compare_keys(std::string_view a, std::string_view b) {
    const int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
    if (c != 0) return c;
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

class TreeWalk {
public:
    TreeWalk(int fd, uint64_t file_size, const Meta& meta)
        : fd_(fd), psize_(meta.page_size), file_pages_(file_size / meta.page_size), last_page_(meta.last_page),
          used_(static_cast<size_t>(file_pages_), false) {}

    bool walk(const Db& db, bool free_list) {
        const char* name = free_list ? "free-page list" : "record tree";
        counts_ = Counts{};
        if (db.root == kNoPage) {
            if (db.depth != 0 || db.entries != 0) return fail(fmt::format("the empty {} claims {} entries", name, db.entries));
            return true;
        }
        if (db.depth == 0 || db.depth > kMaxDepth) return fail(fmt::format("the {} claims a depth of {}", name, db.depth));
        prev_key_.clear();
        have_prev_ = false;
        if (!walk_page(db.root, 1, db.depth, free_list, name)) return false;
        if (counts_.branch != db.branch_pages || counts_.leaf != db.leaf_pages ||
            counts_.overflow != db.overflow_pages || counts_.entries != db.entries) {
            return fail(fmt::format("the {} holds {} branch, {} leaf and {} overflow pages with {} entries; its meta "
                                    "page says {}, {}, {} and {}",
                                    name, counts_.branch, counts_.leaf, counts_.overflow, counts_.entries,
                                    db.branch_pages, db.leaf_pages, db.overflow_pages, db.entries));
        }
        return true;
    }

    // Pages LMDB lists as free must be pages no tree uses, or LMDB would write over a
    // live page. Only possible once both trees are walked.
    bool free_pages_unused() {
        for (uint64_t p : free_pages_) {
            if (p < file_pages_ && used_[static_cast<size_t>(p)]) {
                return fail(fmt::format("page {} is both in use and on the free-page list", p));
            }
        }
        return true;
    }

    size_t records() const { return records_; }
    const std::string& problem() const { return problem_; }

private:
    struct Counts {
        uint64_t branch = 0, leaf = 0, overflow = 0, entries = 0;
    };

    bool fail(std::string what) {
        problem_ = std::move(what);
        return false;
    }

    // Claims pages [first, first + count) for one tree; they must exist in the file and
    // be claimed once.
    bool claim(uint64_t first, uint64_t count, const char* name) {
        if (first < 2 || count == 0 || first > last_page_ || count > last_page_ + 1 - first) {
            return fail(fmt::format("the {} points at page {}, outside pages 2..{} that the meta page records", name,
                                    first, last_page_));
        }
        if (first + count > file_pages_) {
            return fail(fmt::format("the {} needs page {}, past the end of the file ({} pages of {} bytes): it was "
                                    "truncated",
                                    name, first + count - 1, file_pages_, psize_));
        }
        for (uint64_t p = first; p < first + count; ++p) {
            if (used_[static_cast<size_t>(p)]) return fail(fmt::format("page {} is used twice", p));
            used_[static_cast<size_t>(p)] = true;
        }
        return true;
    }

    bool read(uint64_t page, uint64_t count, std::vector<unsigned char>& buf) {
        buf.resize(static_cast<size_t>(count * psize_));
        const auto off = static_cast<off_t>(page * psize_);
        size_t got = 0;
        while (got < buf.size()) {
            const ssize_t n = ::pread(fd_, buf.data() + got, buf.size() - got, off + static_cast<off_t>(got));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                return fail(n < 0 ? fmt::format("reading page {}: {}", page, std::strerror(errno))
                                  : fmt::format("page {} ends early: the file was truncated", page));
            }
            got += static_cast<size_t>(n);
        }
        return true;
    }

    bool walk_page(uint64_t pgno, unsigned level, unsigned depth, bool free_list, const char* name) {
        if (!claim(pgno, 1, name)) return false;
        std::vector<unsigned char> page;
        if (!read(pgno, 1, page)) return false;
        const unsigned char* p = page.data();
        const bool leaf = level == depth;
        const uint16_t kind = load16(p + 10) & kPageKinds;
        if (load64(p) != pgno || kind != (leaf ? kLeaf : kBranch)) {
            return fail(fmt::format("page {} of the {} is damaged (it says it is page {} with flags {:#x}, expected "
                                    "a {} page)",
                                    pgno, name, load64(p), kind, leaf ? "leaf" : "branch"));
        }
        const uint16_t lower = load16(p + 12), upper = load16(p + 14);
        if (lower < kPageHeader + 2 || lower > upper || upper > psize_ || (lower - kPageHeader) % 2 != 0) {
            return fail(fmt::format("page {} of the {} is damaged (free space bounds {}..{})", pgno, name, lower, upper));
        }
        const size_t nodes = (lower - kPageHeader) / 2;
        ++(leaf ? counts_.leaf : counts_.branch);
        std::string last_key_here;
        for (size_t i = 0; i < nodes; ++i) {
            const size_t off = load16(p + kPageHeader + 2 * i);
            if (off < upper || off + kNodeHeader > psize_) {
                return fail(fmt::format("page {} of the {} is damaged (node {} at offset {})", pgno, name, i, off));
            }
            const unsigned char* node = p + off;
            const size_t ksize = load16(node + 6);
            if (ksize > kMaxKeySize || off + kNodeHeader + ksize > psize_) {
                return fail(fmt::format("page {} of the {} is damaged (node {} has a {}-byte key)", pgno, name, i, ksize));
            }
            const std::string_view key(reinterpret_cast<const char*>(node + kNodeHeader), ksize);
            if (!leaf) {
                // The first key of a branch page is empty by construction: LMDB never reads it.
                if (i > 0 && !key_in_order(key, free_list, last_key_here, i > 1, pgno, name)) return false;
                if (i > 0) last_key_here.assign(key);
                const uint64_t child = load16(node) | (static_cast<uint64_t>(load16(node + 2)) << 16) |
                                       (static_cast<uint64_t>(load16(node + 4)) << 32);
                if (!walk_page(child, level + 1, depth, free_list, name)) return false;
                continue;
            }
            if (!key_in_order(key, free_list, prev_key_, have_prev_, pgno, name)) return false;
            prev_key_.assign(key);
            have_prev_ = true;
            const uint16_t nflags = load16(node + 4);
            const uint64_t dsize = load16(node) | (static_cast<uint64_t>(load16(node + 2)) << 16);
            std::string_view data;
            std::vector<unsigned char> big;
            if (nflags == kBigData) {
                if (off + kNodeHeader + ksize + 8 > psize_) {
                    return fail(fmt::format("page {} of the {} is damaged (node {})", pgno, name, i));
                }
                if (!read_overflow(load64(node + kNodeHeader + ksize), dsize, big, name)) return false;
                data = std::string_view(reinterpret_cast<const char*>(big.data()) + kPageHeader, dsize);
            } else if (nflags == 0) {
                if (off + kNodeHeader + ksize + dsize > psize_) {
                    return fail(fmt::format("page {} of the {} is damaged (node {} has {} bytes of data)", pgno, name,
                                            i, dsize));
                }
                data = std::string_view(reinterpret_cast<const char*>(node + kNodeHeader + ksize), dsize);
            } else {
                return fail(fmt::format("page {} of the {} holds a node with flags {:#x} (sub-databases or duplicate "
                                        "keys, which a verdict cache never writes)",
                                        pgno, name, nflags));
            }
            ++counts_.entries;
            if (!(free_list ? free_entry_ok(data, pgno) : record_ok(key, data, pgno))) return false;
        }
        return true;
    }

    bool key_in_order(std::string_view key, bool free_list, const std::string& prev, bool have_prev, uint64_t pgno,
                      const char* name) {
        if (free_list) {
            if (key.size() != 8) return fail(fmt::format("page {} of the {} has a {}-byte key", pgno, name, key.size()));
            if (have_prev && load64(reinterpret_cast<const unsigned char*>(key.data())) <=
                                 load64(reinterpret_cast<const unsigned char*>(prev.data()))) {
                return fail(fmt::format("page {} of the {} has its keys out of order", pgno, name));
            }
            return true;
        }
        if (have_prev && compare_keys(prev, key) >= 0) {
            return fail(fmt::format("page {} of the {} has its keys out of order", pgno, name));
        }
        return true;
    }

    bool read_overflow(uint64_t first, uint64_t dsize, std::vector<unsigned char>& buf, const char* name) {
        if (first < 2 || first >= file_pages_) {
            return fail(fmt::format("the {} points at overflow page {}, outside the file ({} pages)", name, first,
                                    file_pages_));
        }
        if (!read(first, 1, buf)) return false;
        const uint32_t pages = load32(buf.data() + 12);
        if (load64(buf.data()) != first || (load16(buf.data() + 10) & kPageKinds) != kOverflow || pages == 0 ||
            dsize > uint64_t{pages} * psize_ - kPageHeader) {
            return fail(fmt::format("overflow page {} of the {} is damaged", first, name));
        }
        if (!claim(first, pages, name)) return false;
        counts_.overflow += pages;
        return read(first, pages, buf);
    }

    bool record_ok(std::string_view key, std::string_view data, uint64_t pgno) {
        if (!lmdb_record_decodes(key, data)) {
            return fail(fmt::format("page {} holds a record that does not decode (key of {} bytes, {} bytes of data)",
                                    pgno, key.size(), data.size()));
        }
        ++records_;
        return true;
    }

    // A free-list entry is a count followed by that many page numbers, in descending
    // order (LMDB merges them assuming so).
    bool free_entry_ok(std::string_view data, uint64_t pgno) {
        const auto* d = reinterpret_cast<const unsigned char*>(data.data());
        if (data.size() < 8 || data.size() % 8 != 0 || load64(d) > data.size() / 8 - 1) {
            return fail(fmt::format("page {} of the free-page list holds a damaged entry", pgno));
        }
        const uint64_t n = load64(d);
        uint64_t prev = kNoPage;
        for (uint64_t i = 1; i <= n; ++i) {
            const uint64_t p = load64(d + 8 * i);
            if (p < 2 || p > last_page_ || p >= prev) {
                return fail(fmt::format("page {} of the free-page list lists page {}, out of range or order", pgno, p));
            }
            free_pages_.push_back(p);
            prev = p;
        }
        return true;
    }

    int fd_;
    uint64_t psize_, file_pages_, last_page_;
    std::vector<bool> used_;
    std::vector<uint64_t> free_pages_;
    Counts counts_;
    std::string prev_key_;
    bool have_prev_ = false;
    size_t records_ = 0;
    std::string problem_;
};

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

LmdbFileCheck corrupt(std::string problem) { return {LmdbFileCheck::Verdict::Corrupt, std::move(problem), 0}; }

}  // namespace

LmdbFileCheck check_lmdb_file(const std::string& path) {
    Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (f.fd < 0) {
        // Absent is a new cache; anything else (permissions) is for LMDB's own open to
        // report with its advice.
        return {};
    }
    struct stat st {};
    if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return {};
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size == 0) return {};  // LMDB writes the meta pages of a new file itself

    unsigned char head[kMetaBytes] = {};
    const ssize_t n = ::pread(f.fd, head, sizeof head, 0);
    if (n < 0) return {};
    const auto got = static_cast<size_t>(n);
    const Meta m0 = parse_meta(head);
    const bool has_magic = got >= kPageHeader + 4 && (m0.page_flags & kMetaPage) && m0.magic == kMagic;
    if (!has_magic) {
        if (all_zero(head, got)) return corrupt(fmt::format("its first {} bytes are zero, as after a crash", got));
        return {LmdbFileCheck::Verdict::Foreign, "it is not an LMDB file", 0};
    }
    if (got < sizeof head) return corrupt(fmt::format("it is only {} bytes long: truncated", size));
    if (m0.version != kDataVersion) {
        return corrupt(fmt::format("its meta page 0 has data version {}, not LMDB's {}", m0.version, kDataVersion));
    }
    const uint32_t psize = m0.page_size;
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0) {
        return corrupt(fmt::format("its meta page 0 gives a page size of {}", psize));
    }
    if (size < uint64_t{psize} + kMetaBytes) {
        return corrupt(fmt::format("it is {} bytes long, shorter than its two meta pages: truncated", size));
    }
    unsigned char head1[kMetaBytes] = {};
    if (::pread(f.fd, head1, sizeof head1, psize) != static_cast<ssize_t>(sizeof head1)) {
        return corrupt("its meta page 1 cannot be read");
    }
    const Meta m1 = parse_meta(head1);
    if (!(m1.page_flags & kMetaPage) || m1.magic != kMagic) return corrupt("its meta page 1 is damaged");
    if (m1.version != kDataVersion) {
        return corrupt(fmt::format("its meta page 1 has data version {}, not LMDB's {}", m1.version, kDataVersion));
    }
    // LMDB uses the meta page of the newest transaction; the other one's pages may
    // already have been reused.
    Meta meta = m0.txnid < m1.txnid ? m1 : m0;
    meta.page_size = psize;
    // The last page number may lie past the end of a healthy file: LMDB does not
    // write a page it allocated and freed again in the same transaction. So the size
    // is checked against each page the trees reach, which is what LMDB reads.
    if (meta.last_page < 1 || meta.last_page >= kMaxFileBytes / psize) {
        return corrupt(fmt::format("its meta page records {} as the last page", meta.last_page));
    }
    // (The free list's flags field holds the environment's flags instead.)
    if (meta.dbs[1].flags != 0) {
        return corrupt(fmt::format("its record tree has flags {:#x}, not those of a verdict cache", meta.dbs[1].flags));
    }
    TreeWalk walk(f.fd, size, meta);
    if (!walk.walk(meta.dbs[0], true) || !walk.walk(meta.dbs[1], false) || !walk.free_pages_unused()) {
        return corrupt(walk.problem());
    }
    return {LmdbFileCheck::Verdict::Usable, "", walk.records()};
}

}  // namespace smtpscreen
