// Every class of bad input is an InputError (exit 2) whose one line names the file, line and field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "moesweep/analysis/law.h"
#include "moesweep/analysis/runs.h"
#include "moesweep/input_error.h"

namespace moesweep::analysis {
namespace {

class InputFiles : public ::testing::Test {
 protected:
  std::filesystem::path dir_ =
      std::filesystem::temp_directory_path() / ("moesweep_analysis_input_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }
  // The InputError message read_runs_csv gives for `text`, or "" when it accepted it.
  std::string csv_error(const std::string& text) {
    try {
      read_runs_csv(write("runs.csv", text));
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
  std::string coefficients_error(const std::string& text) {
    try {
      load_coefficients(write("fit.toml", text));
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(InputFiles, CsvColumnsMayComeInAnyOrderWithExtras) {
  const auto runs = read_runs_csv(
      write("runs.csv", "loss,experts,note,tokens,n_act\n2.5,4,x,1e9,1e8\n\n3.0,1,y,2e9,5e7\n"));
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_DOUBLE_EQ(runs[0].n_act, 1e8);
  EXPECT_DOUBLE_EQ(runs[0].tokens, 1e9);
  EXPECT_DOUBLE_EQ(runs[0].experts, 4);
  EXPECT_DOUBLE_EQ(runs[1].loss, 3.0);
  EXPECT_EQ(runs[1].label, (dir_ / "runs.csv").string() + ":4");
}

TEST_F(InputFiles, CsvCommentLinesAreSkipped) {
  const auto runs =
      read_runs_csv(write("runs.csv", "# a note\nn_act,tokens,experts,loss\n# another\n1e8,1e9,1,2.5\n"));
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].label, (dir_ / "runs.csv").string() + ":4");
}

TEST_F(InputFiles, ADenseCoefficientsFileNeedsNoEStartOrEMax) {
  Coefficients dense = paper_coefficients();
  dense.gamma = dense.delta = dense.zeta = dense.omega = 0;
  dense.form = LawForm::dense;
  const std::string text = coefficients_toml(dense);
  EXPECT_EQ(text.find("e_start ="), std::string::npos);
  EXPECT_EQ(text.find("e_max ="), std::string::npos);
  const Coefficients back = load_coefficients(write("fit.toml", text));
  EXPECT_EQ(back.form, LawForm::dense);
  EXPECT_DOUBLE_EQ(predict_loss(back, 1e9, 2e10, 1), predict_loss(dense, 1e9, 2e10, 1));
  EXPECT_NE(coefficients_error("form = \"joint\"\n" + text.substr(text.find("\na = ") + 1))
                .find("e_start: missing"),
            std::string::npos);
}

TEST_F(InputFiles, CsvMissingColumnNamesIt) {
  const std::string error = csv_error("n_act,tokens,loss\n1e8,1e9,2.5\n");
  EXPECT_NE(error.find("runs.csv:1: experts: missing column"), std::string::npos) << error;
}

TEST_F(InputFiles, CsvNonPositiveValueNamesLineAndField) {
  const std::string error = csv_error("n_act,tokens,experts,loss\n1e8,1e9,1,2.5\n1e8,0,1,2.5\n");
  EXPECT_NE(error.find("runs.csv:3: tokens: must be positive"), std::string::npos) << error;
  EXPECT_NE(csv_error("n_act,tokens,experts,loss\n1e8,1e9,1,-2\n").find("loss: must be positive"),
            std::string::npos);
}

TEST_F(InputFiles, CsvRejectsTextMissingValuesFractionalExpertsAndEmptyFiles) {
  EXPECT_NE(
      csv_error("n_act,tokens,experts,loss\n1e8,lots,1,2.5\n").find(":2: tokens: 'lots' is not a number"),
      std::string::npos);
  EXPECT_NE(csv_error("n_act,tokens,experts,loss\n1e8,1e9,1\n").find(":2: loss: missing value"),
            std::string::npos);
  EXPECT_NE(csv_error("n_act,tokens,experts,loss\n1e8,1e9,0.5,2.5\n").find("experts: must be at least 1"),
            std::string::npos);
  EXPECT_NE(csv_error("n_act,tokens,experts,loss\n").find("no runs"), std::string::npos);
  EXPECT_THROW(read_runs_csv((dir_ / "absent.csv").string()), InputError);
}

TEST_F(InputFiles, CoefficientsFileMissingAKeyNamesIt) {
  std::string text = coefficients_toml(paper_coefficients());
  text.replace(text.find("zeta = "), 5, "zota");
  const std::string error = coefficients_error(text);
  EXPECT_NE(error.find("fit.toml: zeta: missing coefficient"), std::string::npos) << error;
}

TEST_F(InputFiles, CoefficientsFileRejectsTextSyntaxAndAnInvertedExpertRange) {
  EXPECT_NE(coefficients_error("a = \"big\"\n").find(":1: a: not a finite number"), std::string::npos);
  EXPECT_NE(coefficients_error("a = = 3\n").find("fit.toml:1"), std::string::npos);
  Coefficients inverted = paper_coefficients();
  inverted.e_start = 300;
  EXPECT_NE(coefficients_error(coefficients_toml(inverted)).find("e_start < e_max"), std::string::npos);
  EXPECT_THROW(load_coefficients((dir_ / "absent.toml").string()), InputError);
}

}  // namespace
}  // namespace moesweep::analysis
