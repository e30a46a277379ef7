/* file_test.c - ferry_read_small_file: whole file, the cap, bad paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/file.h"

static void test_reads_whole_file_and_enforces_cap(void **state)
{
    (void)state;
    char path[] = "/tmp/ferry-file-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "-----BEGIN X-----\n", 18), 18);
    close(fd);
    char *data = NULL;
    const char *why = NULL;
    assert_int_equal(ferry_read_small_file(path, 18, &data, &why), FERRY_OK);
    assert_string_equal(data, "-----BEGIN X-----\n");
    free(data);
    data = NULL;
    assert_int_equal(ferry_read_small_file(path, 17, &data, &why), FERRY_ERR_CONFIG);
    assert_null(data);
    assert_non_null(strstr(why, "size limit"));
    unlink(path);
    assert_int_equal(ferry_read_small_file(path, 100, &data, &why), FERRY_ERR_CONFIG);
    assert_string_equal(why, "cannot open");
    assert_int_equal(ferry_read_small_file("/tmp", 100, &data, &why), FERRY_ERR_CONFIG);
    assert_null(data);
    fd = mkstemp(path);
    close(fd);
    assert_int_equal(ferry_read_small_file(path, 100, &data, NULL), FERRY_ERR_CONFIG);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_whole_file_and_enforces_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
