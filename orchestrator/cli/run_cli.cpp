// The exit-status contract of commands.h, in one place for both executables.
#include <exception>
#include <iostream>
#include <string>

#include "commands.h"
#include "moesweep/input_error.h"

namespace moesweep::cli {

int run_cli(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "moesweep: " << e.what() << " (see moesweep --help)\n";
    return 2;
  } catch (const InputError& e) {
    std::cerr << "moesweep: " << e.what() << "\n";
    return 2;
  } catch (const ExitStatus& e) {
    return e.code;
  } catch (const std::exception& e) {
    // LibTorch's errors carry a C++ backtrace after the first line; users get the first line only.
    const std::string message = e.what();
    std::cerr << "moesweep: error: " << message.substr(0, message.find('\n')) << "\n";
    return 1;
  }
  return 0;
}

}  // namespace moesweep::cli
