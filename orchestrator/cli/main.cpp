#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "commands.h"
#include "moesweep/input_error.h"

int main(int argc, char** argv) {
  CLI::App app{"moesweep: Mixture-of-Experts scaling-law sweeps (Ludziejewski et al., ICML 2025)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  moesweep::cli::add_expand(app);
  moesweep::cli::add_status(app);
  moesweep::cli::add_run(app);
  moesweep::cli::add_fit(app);
  moesweep::cli::add_predict(app);
  moesweep::cli::add_plan(app);
  moesweep::cli::add_prepare_data(app);
  moesweep::cli::add_train(app);
  moesweep::cli::add_submit(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "moesweep: " << e.what() << " (see moesweep --help)\n";
    return 2;
  } catch (const moesweep::InputError& e) {
    std::cerr << "moesweep: " << e.what() << "\n";
    return 2;
  } catch (const moesweep::cli::ExitStatus& e) {
    return e.code;
  } catch (const std::exception& e) {
    // LibTorch's errors carry a C++ backtrace after the first line; users get the first line only.
    const std::string message = e.what();
    std::cerr << "moesweep: error: " << message.substr(0, message.find('\n')) << "\n";
    return 1;
  }
  return 0;
}
