#pragma once
// Sweep and run files written by the orchestrator tests, each test in a directory of its own so that
// the tests can run in parallel and leave nothing behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace moesweep::orchestrator::testing {

class TempFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() / ("moesweep_" + std::string(test->test_suite_name()) +
                                                     "_" + std::to_string(::getpid()) + "_" + test->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // The path of the file NAME, written with TEXT.
  std::string write(const std::string& name, const std::string& text) {
    const std::filesystem::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::filesystem::path dir_;
};

// Shards that expanding a sweep never opens.
inline constexpr const char* kData = "[data]\ntrain = \"t.bin\"\nval = \"v.bin\"\n";

}  // namespace moesweep::orchestrator::testing
