#include "moesweep/db/journal.h"

#include <sys/statfs.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "moesweep/input_error.h"

namespace moesweep::db {

const char* journal_name(Journal journal) {
  switch (journal) {
    case Journal::Auto:
      return "auto";
    case Journal::Wal:
      return "wal";
    case Journal::Rollback:
      return "rollback";
  }
  return "auto";
}

Journal parse_journal(const std::string& text, const std::string& what) {
  if (text == "auto") return Journal::Auto;
  if (text == "wal") return Journal::Wal;
  if (text == "rollback") return Journal::Rollback;
  throw InputError(what + ": expected \"auto\", \"wal\" or \"rollback\", got \"" + text + "\"");
}

const char* network_filesystem(unsigned long f_type) {
  // [magic.h] Linux include/uapi/linux/magic.h; [coreutils] GNU coreutils src/stat.c, human_fstype(),
  // where each of these is marked "remote"; [orangefs] Linux fs/orangefs/protocol.h.
  switch (f_type) {
    case 0x6969:  // NFS_SUPER_MAGIC [magic.h]: NFS v2, v3, v4
      return "nfs";
    case 0x517B:  // SMB_SUPER_MAGIC [magic.h]
      return "smb";
    case 0xFF534D42:  // CIFS_SUPER_MAGIC [magic.h]
      return "cifs";
    case 0xFE534D42:  // SMB2_SUPER_MAGIC [magic.h]: the cifs client speaking SMB2/3
      return "smb2";
    case 0x0BD00BD0:  // S_MAGIC_LUSTRE [coreutils]; Lustre's LL_SUPER_MAGIC
      return "lustre";
    case 0x47504653:  // S_MAGIC_GPFS [coreutils]: IBM Spectrum Scale, "GPFS" in ASCII
      return "gpfs";
    case 0x19830326:  // S_MAGIC_FHGFS [coreutils]: BeeGFS, formerly FhGFS
      return "beegfs";
    case 0x00C36400:  // CEPH_SUPER_MAGIC [magic.h]: CephFS
      return "cephfs";
    case 0x5346414F:  // AFS_SUPER_MAGIC [magic.h]: OpenAFS
      return "afs";
    case 0x6B414653:  // AFS_FS_MAGIC [magic.h]: the kernel's kAFS
      return "kafs";
    case 0x01021997:  // V9FS_MAGIC [magic.h]: 9P, a host's directory shared into a VM or WSL
      return "9p";
    case 0x01161970:  // S_MAGIC_GFS [coreutils]: GFS2, a shared-disk cluster file system
      return "gfs2";
    case 0x7461636F:  // OCFS2_SUPER_MAGIC [magic.h]: a shared-disk cluster file system
      return "ocfs2";
    case 0x20030528:  // ORANGEFS_SUPER_MAGIC [orangefs]: OrangeFS, formerly PVFS2
      return "orangefs";
    case 0xAAD7AAEA:  // S_MAGIC_PANFS [coreutils]: Panasas PanFS
      return "panfs";
    case 0xBEEFDEAD:  // S_MAGIC_SNFS [coreutils]: StorNext
      return "stornext";
    case 0x013111A8:  // S_MAGIC_IBRIX [coreutils]: HPE IBRIX
      return "ibrix";
    case 0x61636673:  // S_MAGIC_ACFS [coreutils]: Oracle ACFS
      return "acfs";
    case 0x65735546:  // FUSE_SUPER_MAGIC [magic.h]: sshfs, GlusterFS, JuiceFS, s3fs, CernVM-FS, ...
      return "fuse";
    case 0x564C:  // NCP_SUPER_MAGIC [magic.h]: NetWare
      return "ncp";
    case 0x73757245:  // CODA_SUPER_MAGIC [magic.h]
      return "coda";
    default:
      return nullptr;
  }
}

namespace {

std::string hex(unsigned long f_type) {
  char text[32];
  std::snprintf(text, sizeof text, "0x%lx", f_type);
  return text;
}

}  // namespace

JournalChoice choose_journal(Journal requested, const char* env, std::optional<unsigned long> f_type,
                             const std::string& dir) {
  std::string because;
  if (env && *env) {
    requested = parse_journal(env, kJournalEnv);
    if (requested != Journal::Auto)
      return {requested, std::string(journal_name(requested)) + ": forced by " + kJournalEnv + "=" + env};
    because = " (" + std::string(kJournalEnv) + "=auto)";
  }
  if (requested != Journal::Auto)
    return {requested, std::string(journal_name(requested)) + ": requested ([store] journal)"};
  if (!f_type) return {Journal::Rollback, "rollback: statfs failed at " + dir + because};
  if (const char* name = network_filesystem(*f_type))
    return {Journal::Rollback,
            std::string("rollback: ") + name + " (statfs " + hex(*f_type) + ") at " + dir + because};
  return {Journal::Wal, "wal: local file system (statfs " + hex(*f_type) + ") at " + dir + because};
}

JournalChoice choose_journal_for(const std::string& db_path, Journal requested) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string where = db_path;
  if (!fs::exists(db_path, ec)) {
    const fs::path parent = fs::path(db_path).parent_path();
    where = parent.empty() ? "." : parent.string();
  }
  struct statfs info {};
  std::optional<unsigned long> f_type;
  // f_type is a signed word on some platforms: a magic number with its top bit set (CIFS) must not
  // come back sign-extended. Every magic number fits in 32 bits.
  if (statfs(where.c_str(), &info) == 0) f_type = static_cast<unsigned long>(info.f_type) & 0xFFFFFFFFul;
  const fs::path absolute = fs::absolute(where, ec);
  fs::path dir = (fs::is_directory(absolute, ec) ? absolute : absolute.parent_path()).lexically_normal();
  if (dir.filename().empty() && dir.has_relative_path()) dir = dir.parent_path();  // "/a/b/." → "/a/b"
  return choose_journal(requested, std::getenv(kJournalEnv), f_type, dir.string());
}

}  // namespace moesweep::db
