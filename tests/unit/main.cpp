// Catch2's main. The console width is wide so that `--list-test-names-only`
// (which CTest's test discovery reads) never wraps a long test name into two.
#define CATCH_CONFIG_CONSOLE_WIDTH 200
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
