// moesweep status --db FILE [--sweep NAME] [--json] [--watch SECONDS]: progress of a sweep, read-only.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "commands.h"
#include "format.h"
#include "moesweep/db/store.h"
#include "moesweep/input_error.h"
#include "moesweep/orchestrator/progress.h"
#include "moesweep/orchestrator/slurm_submit.h"

namespace moesweep::cli {
namespace {

struct StatusOptions {
  std::string db_path;
  std::string sweep;
  bool json = false;
  double watch_seconds = 0;
};

nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}

nlohmann::json row_json(const db::StatusRow& r) {
  return {{"run_key", r.run_key},
          {"state", r.state},
          {"n_act", r.n_act},
          {"tokens", r.tokens},
          {"experts", r.experts},
          {"progress", r.progress},
          {"step", r.step},
          {"last_loss", optional_json(r.last_loss)},
          {"final_loss", optional_json(r.final_loss)},
          {"tokens_per_s", optional_json(r.tokens_per_s)},
          {"rank", r.rank ? nlohmann::json(*r.rank) : nlohmann::json()},
          {"ranks", r.ranks},
          {"attempts", r.attempts},
          {"updated_at", r.updated_at},
          {"error", r.error},
          {"kind", r.kind},
          {"trunk", r.trunk_key.empty() ? nlohmann::json() : nlohmann::json(r.trunk_key)},
          {"branch_step", r.branch_step ? nlohmann::json(*r.branch_step) : nlohmann::json()},
          {"trained_tokens", r.trained_tokens}};
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The coordinator that owns the sweep now (a lease that holds), for "who runs this" and --take-over.
std::optional<db::Lease> owner_of(const db::Store& store, const std::string& sweep) {
  auto lease = store.sweep_lease(sweep);
  if (!lease || lease->broken || lease->expires_at <= unix_now()) return std::nullopt;
  return lease;
}

std::string render_json(const db::Store& store, const std::optional<std::string>& sweep) {
  const auto rows = store.status(sweep);
  const auto p = orchestrator::summarize(rows);
  nlohmann::json out;
  out["db"] = store.path();
  out["sweeps"] = nlohmann::json::array();
  for (const auto& s : store.sweeps())
    if (!sweep || s.name == *sweep) {
      // The job's state from squeue/sacct where they are on the PATH; null otherwise.
      const auto state = orchestrator::slurm::job_state(s.slurm_job_id);
      nlohmann::json owner;  // null: no coordinator holds the sweep now
      if (const auto lease = owner_of(store, s.name))
        owner = {{"host", lease->owner.host},
                 {"pid", lease->owner.pid},
                 {"slurm_job_id", lease->owner.slurm_job_id},
                 {"lease_expires_at", lease->expires_at}};
      out["sweeps"].push_back({{"name", s.name},
                               {"spec_path", s.spec_path},
                               {"slurm_job_id", s.slurm_job_id},
                               {"slurm_state", state ? nlohmann::json(*state) : nlohmann::json()},
                               {"owner", owner}});
    }
  // The journal the file is in, and what a writer here would choose (a read-only open changes nothing).
  out["journal"] = {{"mode", db::journal_name(store.journal())},
                    {"chosen", db::journal_name(store.journal_choice().journal)},
                    {"reason", store.journal_choice().reason}};
  nlohmann::json wal;  // null: a rollback journal, or no WAL upkeep recorded yet
  if (const auto h = store.journal() == db::Journal::Wal ? store.wal_health() : std::nullopt) {
    const auto warning = db::wal_warning(*h, store.path(), unix_now());
    wal = {{"bytes", h->wal_bytes},
           {"checked_at", h->checked_at},
           {"log_frames", h->log_frames},
           {"checkpointed_frames", h->checkpointed_frames},
           {"pinned_since", h->pinned_since ? nlohmann::json(*h->pinned_since) : nlohmann::json()},
           {"warning", warning ? nlohmann::json(*warning) : nlohmann::json()}};
  }
  out["wal"] = wal;
  out["runs_total"] = p.runs;
  out["counts"] = p.runs_by_state;
  out["flops_done"] = p.flops_done;
  out["flops_total"] = p.flops_total;
  out["progress"] = p.flops_total > 0 ? p.flops_done / p.flops_total : 0.0;
  out["flops_per_s"] = p.flops_per_s;
  out["eta_seconds"] = optional_json(p.eta_seconds);
  // The runs go into the text row by row, not into one document first: 100,000 rows as one
  // nlohmann::json took most of --json's time. The text is the same as the whole document's dump(2).
  const std::string marker = "\x01runs\x01";
  out["runs"] = marker;
  std::string text = out.dump(2) + "\n";
  const std::string placeholder = "\"runs\": " + nlohmann::json(marker).dump();
  const std::size_t at = text.find(placeholder);
  std::string json = text.substr(0, at) + "\"runs\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    json += i > 0 ? ",\n    " : "\n    ";
    for (const char c : row_json(rows[i]).dump(2)) {
      if (c == '\n')
        json += "\n    ";  // the row sits two levels in
      else
        json += c;
    }
  }
  json += rows.empty() ? "]" : "\n  ]";
  return json.append(text, at + placeholder.size());
}

std::string render_text(const db::Store& store, const std::optional<std::string>& sweep) {
  // Totals, and the rows of the runs listed below: not a row for every run.
  const auto digest = store.status_digest(sweep, {"running", "failed", "diverged"});
  const auto& totals = digest.totals;
  const auto& rows = digest.listed;
  const auto p = orchestrator::summarize(totals, rows);
  std::ostringstream o;
  char line[512];

  o << store.path() << ":";
  for (const auto& s : store.sweeps()) {
    if (sweep && s.name != *sweep) continue;
    o << " sweep '" << s.name << "'";
    if (!s.slurm_job_id.empty()) {
      o << " (Slurm job " << s.slurm_job_id;
      if (const auto state = orchestrator::slurm::job_state(s.slurm_job_id)) o << ": " << *state;
      o << ")";
    }
    if (const auto lease = owner_of(store, s.name))
      o << " owned by " << lease->owner.host << " pid " << lease->owner.pid;
  }
  o << "\n";
  // WAL on a network file system: a writer here switches it at its next open; until then, say so.
  if (store.journal() == db::Journal::Wal && store.journal_choice().journal == db::Journal::Rollback)
    o << "warning: the database is in WAL mode, which is not safe across hosts (" << store.journal_choice().reason
      << "); the next moesweep run or submit switches it to a rollback journal\n";
  if (const auto h = store.wal_health())
    if (const auto warning = db::wal_warning(*h, store.path(), unix_now())) o << *warning << "\n";

  o << "runs: " << p.runs << " —";
  for (const char* state : {"done", "running", "pending", "preempted", "failed", "diverged"})
    if (auto it = p.runs_by_state.find(state); it != p.runs_by_state.end())
      o << " " << it->second << " " << state;
  std::int64_t trunks = 0, trunks_done = 0;
  for (const auto& t : totals)
    if (t.kind == "trunk") trunks += t.runs, trunks_done += t.state == "done" ? t.runs : 0;
  if (trunks > 0)
    o << " (" << trunks << " cooldown trunks, " << trunks_done << " done; the rest are their branches)";
  o << "\n";

  const double fraction = p.flops_total > 0 ? p.flops_done / p.flops_total : 0.0;
  std::snprintf(line, sizeof line, "compute: %s of %s FLOPs (%.1f%%)", scientific(p.flops_done).c_str(),
                scientific(p.flops_total).c_str(), 100.0 * fraction);
  o << line;
  if (p.eta_seconds)
    o << ", ETA " << human_duration(*p.eta_seconds) << " at " << scientific(p.flops_per_s) << " FLOP/s";
  else if (p.runs_by_state.count("pending") || p.runs_by_state.count("preempted"))
    o << ", ETA unknown (nothing running)";
  o << "\n";

  bool header = false;
  for (const auto& r : rows) {
    if (r.state != "running") continue;
    if (!header) {
      std::snprintf(line, sizeof line, "\nrunning:\n  %-12s %3s %8s %8s %8s %6s %8s %10s %5s\n", "run_key",
                    "E", "N_act", "tokens", "step", "done", "loss", "tokens/s", "rank");
      o << line;
      header = true;
    }
    const std::string key = r.kind == "run" ? r.run_key.substr(0, 12) : r.run_key.substr(0, 6) + " " + r.kind;
    std::snprintf(line, sizeof line, "  %-12s %3lld %8s %8s %8lld %5.1f%% %8s %10s %5s\n", key.c_str(),
                  static_cast<long long>(r.experts), human_count(static_cast<double>(r.n_act)).c_str(),
                  human_count(static_cast<double>(r.tokens)).c_str(), static_cast<long long>(r.step),
                  100.0 * r.progress, r.last_loss ? std::to_string(*r.last_loss).substr(0, 6).c_str() : "-",
                  r.tokens_per_s ? human_count(*r.tokens_per_s).c_str() : "-",
                  r.rank ? std::to_string(*r.rank).c_str() : "-");
    o << line;
  }
  header = false;
  for (const auto& r : rows) {
    if (r.state != "failed" && r.state != "diverged") continue;
    if (!header) {
      o << "\nfailures:\n";
      header = true;
    }
    std::snprintf(line, sizeof line, "  %-12s %-8s attempts %lld: ", r.run_key.substr(0, 12).c_str(),
                  r.state.c_str(), static_cast<long long>(r.attempts));
    o << line << (r.error.empty() ? "(no message)" : r.error) << "\n";
  }
  return o.str();
}

void run_status(const StatusOptions& opt) {
  const std::optional<std::string> sweep = opt.sweep.empty() ? std::nullopt : std::optional(opt.sweep);
  auto render = [&] {
    db::Store store = db::Store::open(opt.db_path, db::Store::Mode::ReadOnly);
    if (sweep && !store.sweep(*sweep)) throw InputError(opt.db_path + ": no sweep named '" + *sweep + "'");
    return opt.json ? render_json(store, sweep) : render_text(store, sweep);
  };
  if (opt.watch_seconds <= 0) {
    std::cout << render();
    return;
  }
  while (true) {  // until interrupted, like watch(1)
    std::string text = render();
    std::cout << (opt.json ? "" : "\033[H\033[2J") << text << std::flush;
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.watch_seconds));
  }
}

}  // namespace

void add_status(CLI::App& app) {
  auto* cmd = app.add_subcommand("status", "Show a sweep's progress from its database (read-only)");
  auto opt = std::make_shared<StatusOptions>();
  cmd->add_option("--db", opt->db_path, "Sweep database (SQLite)")->required();
  cmd->add_option("--sweep", opt->sweep, "Only this sweep (default: every sweep in the database)");
  cmd->add_flag("--json", opt->json, "Machine-readable output");
  cmd->add_option("--watch", opt->watch_seconds, "Refresh every SECONDS until interrupted")
      ->check(kPositive);
  cmd->callback([opt] { run_status(*opt); });
}

}  // namespace moesweep::cli
