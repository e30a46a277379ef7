# Helpers shared by every module's CMakeLists.txt.

# ferry_unit_test(NAME SOURCES src... LIBS lib...)
# A cmocka test program, run by ctest as its own process.
function(ferry_unit_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "unit;${T_LABELS}" TIMEOUT 120)
endfunction()

# ferry_fuzz_target(NAME SOURCE file CORPUS dir LIBS lib...)
# With FERRY_FUZZ (clang) the target is a libFuzzer binary and ctest replays
# its committed seed corpus through it (-runs=0 runs each seed once). Without
# it, the same LLVMFuzzerTestOneInput is linked against a small driver that
# feeds it every file of the corpus, so the seeds are replayed in every build.
function(ferry_fuzz_target name)
  cmake_parse_arguments(F "" "SOURCE;CORPUS" "LIBS" ${ARGN})
  if(FERRY_FUZZ)
    add_executable(${name} ${F_SOURCE})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    add_test(NAME ${name}_replay COMMAND ${name} -runs=0 ${F_CORPUS})
  else()
    add_executable(${name} ${F_SOURCE} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.c)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    add_test(NAME ${name}_replay COMMAND ${name} ${F_CORPUS})
  endif()
  set_tests_properties(${name}_replay PROPERTIES LABELS "fuzz" TIMEOUT 300)
endfunction()

# ferry_integration_test(NAME COMMAND cmd...)
# A test that starts real processes; it gets the build dir and source dir in
# its environment so it can find ferryd, ferryctl and the harness.
function(ferry_integration_test name)
  cmake_parse_arguments(I "" "TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT I_TIMEOUT)
    set(I_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${I_COMMAND})
  set_tests_properties(${name} PROPERTIES
    LABELS "integration;${I_LABELS}" TIMEOUT ${I_TIMEOUT}
    ENVIRONMENT "FERRY_BUILD_DIR=${PROJECT_BINARY_DIR};FERRY_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()
