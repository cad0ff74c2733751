/*
 * Device directory scanning with masking (see config_dirs.h).
 *
 * Every directory is read in full before masking is applied, so the outcome does not depend
 * on readdir() order; entries are stat()ed relative to the open directory so that a
 * directory renamed during the scan cannot mix two trees.
 */
#include "config_dirs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct scan_entry {
    struct config_dirs_entry entry;
    size_t directory_index;
};

struct scan {
    struct scan_entry *entries;
    size_t count;
    size_t capacity;
};

__attribute__((format(printf, 3, 4))) static void set_error(char *error, size_t size,
                                                            const char *format, ...)
{
    va_list args;

    if (error == NULL || size == 0) {
        return;
    }
    va_start(args, format);
    vsnprintf(error, size, format, args);
    va_end(args);
}

bool config_dirs_name_wanted(const char *name)
{
    static const char suffix[] = ".yaml";
    size_t length = strlen(name);

    /* Hidden files include editor swap files (.foo.yaml.swp) and our own temporary files. */
    if (name[0] == '.' || name[0] == '#') {
        return false;
    }
    return length > strlen(suffix) && strcmp(name + length - strlen(suffix), suffix) == 0;
}

static void classify(int directory_fd, const char *name, struct config_dirs_entry *entry)
{
    struct stat st;

    if (fstatat(directory_fd, name, &st, 0) < 0) {
        entry->kind = CONFIG_DIRS_BROKEN;
        entry->error = -errno;
    } else if (S_ISREG(st.st_mode)) {
        entry->kind = CONFIG_DIRS_FILE;
    } else if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
        entry->kind = CONFIG_DIRS_MASKED;
    } else {
        entry->kind = CONFIG_DIRS_BROKEN;
        entry->error = -EINVAL;
    }
}

static int scan_add(struct scan *scan, const char *directory, size_t directory_index,
                    int directory_fd, const char *name)
{
    struct scan_entry *slot;

    if (scan->count == scan->capacity) {
        size_t capacity = scan->capacity == 0 ? 16 : scan->capacity * 2;
        struct scan_entry *entries = realloc(scan->entries, capacity * sizeof(*entries));
        if (entries == NULL) {
            return -ENOMEM;
        }
        scan->entries = entries;
        scan->capacity = capacity;
    }
    slot = &scan->entries[scan->count];
    memset(slot, 0, sizeof(*slot));
    slot->directory_index = directory_index;
    slot->entry.name = strdup(name);
    if (slot->entry.name == NULL ||
        asprintf(&slot->entry.path, "%s%s%s", directory,
                 directory[strlen(directory) - 1] == '/' ? "" : "/", name) < 0) {
        free(slot->entry.name);
        return -ENOMEM;
    }
    classify(directory_fd, name, &slot->entry);
    scan->count++;
    return 0;
}

static int scan_directory(struct scan *scan, const char *directory, size_t directory_index,
                          char *error, size_t error_size)
{
    struct dirent *dirent;
    DIR *stream = NULL;
    int fd;
    int ret;

    if (directory[0] == '\0') {
        set_error(error, error_size, "an empty directory name");
        return -EINVAL;
    }
    fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        ret = errno == ENOENT ? 0 : -errno;
        if (ret < 0) {
            set_error(error, error_size, "%s: cannot open: %s", directory, strerror(-ret));
        }
        goto out;
    }
    stream = fdopendir(fd);
    if (stream == NULL) {
        ret = -errno;
        set_error(error, error_size, "%s: cannot read: %s", directory, strerror(-ret));
        close(fd);
        goto out;
    }
    for (;;) {
        errno = 0;
        dirent = readdir(stream);
        if (dirent == NULL) {
            ret = -errno;
            if (ret < 0) {
                set_error(error, error_size, "%s: cannot read: %s", directory, strerror(-ret));
            }
            break;
        }
        if (!config_dirs_name_wanted(dirent->d_name)) {
            continue;
        }
        ret = scan_add(scan, directory, directory_index, dirfd(stream), dirent->d_name);
        if (ret < 0) {
            set_error(error, error_size, "%s: out of memory", directory);
            break;
        }
    }
out:
    if (stream != NULL) {
        closedir(stream);
    }
    return ret;
}

static int compare_entries(const void *a, const void *b)
{
    const struct scan_entry *left = a;
    const struct scan_entry *right = b;
    int order = strcmp(left->entry.name, right->entry.name);

    if (order != 0) {
        return order;
    }
    return left->directory_index < right->directory_index
               ? -1
               : left->directory_index > right->directory_index;
}

static void free_entry(struct config_dirs_entry *entry)
{
    free(entry->name);
    free(entry->path);
}

int config_dirs_scan(char *const *directories, size_t directory_count,
                     struct config_dirs_list *list, char *error, size_t error_size)
{
    struct scan scan = {0};
    struct config_dirs_entry *entries = NULL;
    size_t kept = 0;
    size_t i;
    int ret = 0;

    list->entries = NULL;
    list->count = 0;
    for (i = 0; i < directory_count; i++) {
        ret = scan_directory(&scan, directories[i], i, error, error_size);
        if (ret < 0) {
            goto out;
        }
    }
    if (scan.count > 0) {
        qsort(scan.entries, scan.count, sizeof(*scan.entries), compare_entries);
    }
    entries = calloc(scan.count + 1, sizeof(*entries));
    if (entries == NULL) {
        ret = -ENOMEM;
        set_error(error, error_size, "out of memory");
        goto out;
    }
    /* After sorting, the first of each name comes from the earliest directory. */
    for (i = 0; i < scan.count; i++) {
        if (kept > 0 && strcmp(entries[kept - 1].name, scan.entries[i].entry.name) == 0) {
            free_entry(&scan.entries[i].entry);
        } else {
            entries[kept++] = scan.entries[i].entry;
        }
    }
    scan.count = 0;
    list->entries = entries;
    list->count = kept;
    entries = NULL;
    ret = 0;
out:
    for (i = 0; i < scan.count; i++) {
        free_entry(&scan.entries[i].entry);
    }
    free(scan.entries);
    free(entries);
    return ret;
}

void config_dirs_list_free(struct config_dirs_list *list)
{
    size_t i;

    for (i = 0; i < list->count; i++) {
        free_entry(&list->entries[i]);
    }
    free(list->entries);
    list->entries = NULL;
    list->count = 0;
}

bool config_dirs_find(char *const *directories, size_t directory_count, const char *name,
                      char *path, size_t size)
{
    struct stat status;

    for (size_t i = 0; i < directory_count; i++) {
        if (snprintf(path, size, "%s/%s", directories[i], name) >= (int)size)
            return true;
        if (lstat(path, &status) == 0)
            return true;
    }
    return false;
}

int config_dirs_remove(char *const *directories, size_t directory_count, const char *name,
                       const char *origin, char *error, size_t error_size)
{
    char path[4096];
    struct stat status;
    int ret;

    if (directory_count == 0)
        return 0;
    if (snprintf(path, sizeof(path), "%s/%s", directories[0], name) >= (int)sizeof(path)) {
        snprintf(error, error_size, "%s/%s: path too long", directories[0], name);
        return -ENAMETOOLONG;
    }
    if (lstat(path, &status) == 0) {
        if (unlink(path) < 0) {
            ret = -errno;
            snprintf(error, error_size, "cannot delete %.512s: %s", path, strerror(-ret));
            return ret;
        }
        if (strcmp(path, origin) == 0)
            return 0;
    }
    /* The file is in a later directory: a /dev/null link of that name masks it. */
    if (access(origin, F_OK) == 0 && symlink("/dev/null", path) < 0) {
        ret = -errno;
        snprintf(error, error_size, "cannot mask %.400s with %.400s: %s", origin, path,
                 strerror(-ret));
        return ret;
    }
    return 0;
}
