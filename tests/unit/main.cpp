// The doctest runner of the unit tests, with the skips of skip.hpp counted:
// after doctest's own summary it lists the cases that skipped themselves and
// prints one line
//   unit: N passed, N failed, N skipped
// where "passed" leaves out the skipped cases (doctest counts them as passed).
// The exit status is doctest's.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <iostream>

#include "skip.hpp"

namespace {

struct RunTotals {
    bool ran = false;
    unsigned cases = 0;   // cases that passed the filters and ran
    unsigned failed = 0;  // cases that failed
};
RunTotals totals;

// Tells skip.hpp which case runs, and counts a case as skipped when it skipped
// itself and ended without a failure (a case whose skip became a failure in
// requirement mode counts as failed).
struct SkipListener : doctest::IReporter {
    explicit SkipListener(const doctest::ContextOptions&) {}

    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {
        ember_test::skip_detail::skipped_cases.clear();
        totals = {};
    }
    void test_run_end(const doctest::TestRunStats& s) override {
        totals.ran = true;
        totals.cases = s.numTestCasesPassingFilters;
        totals.failed = s.numTestCasesFailed;
    }
    void test_case_start(const doctest::TestCaseData& tc) override {
        ember_test::skip_detail::current_test_case = tc.m_name;
        ember_test::skip_detail::current_skips.clear();
    }
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats& st) override {
        auto& skips = ember_test::skip_detail::current_skips;
        if (!skips.empty() && st.testCaseSuccess) ember_test::skip_detail::skipped_cases.push_back(skips.front());
        skips.clear();
        ember_test::skip_detail::current_test_case = "(no test case)";
    }
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

DOCTEST_REGISTER_LISTENER("ember_skips", 1, SkipListener);

int main(int argc, char** argv) {
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    const int status = context.run();
    if (!totals.ran) return status;  // a query: --help, --list-test-cases, ...

    const auto& skipped = ember_test::skip_detail::skipped_cases;
    const auto n_skipped = static_cast<unsigned>(skipped.size());
    if (n_skipped > 0) {
        std::cout << "skipped test cases:\n";
        for (const ember_test::Skip& s : skipped) std::cout << "  " << s.test_case << ": " << s.reason << "\n";
    }
    const unsigned passed = totals.cases - totals.failed - n_skipped;
    std::cout << "unit: " << passed << " passed, " << totals.failed << " failed, " << n_skipped << " skipped"
              << std::endl;
    return status;
}
