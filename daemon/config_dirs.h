/*
 * Finding device drop-ins across vfio-userd's device directories.
 *
 * The directories are searched in order (by default /etc, then /run, then /usr/lib); a file
 * name found in an earlier directory masks the same name in later ones, so an administrator
 * overrides a vendor's device by writing a file of the same name, and disables it with a
 * symlink to /dev/null, as with systemd units. Only NAME.yaml files count: hidden files and
 * editor leftovers (.foo.yaml.swp, foo.yaml~, #foo.yaml#) are skipped.
 */
#ifndef VFIO_USERD_CONFIG_DIRS_H
#define VFIO_USERD_CONFIG_DIRS_H

#include <stdbool.h>
#include <stddef.h>

enum config_dirs_kind {
    CONFIG_DIRS_FILE,   /* a regular file or a symlink to one: load it */
    CONFIG_DIRS_MASKED, /* a symlink to /dev/null: the name is disabled, nothing to load */
    CONFIG_DIRS_BROKEN, /* anything else, e.g. a dangling symlink or a directory: report it */
};

/* The file that won for one name. Masked and broken entries mask later directories too. */
struct config_dirs_entry {
    char *name; /* "tdev0.yaml" */
    char *path; /* DIRECTORY/NAME */
    enum config_dirs_kind kind;
    int error; /* CONFIG_DIRS_BROKEN: -errno of stat(), or -EINVAL for a wrong file type */
};

struct config_dirs_list {
    struct config_dirs_entry *entries; /* sorted by name (bytewise) */
    size_t count;
};

/* Whether a directory entry of this name is a device drop-in candidate. */
bool config_dirs_name_wanted(const char *name);

/*
 * Lists the drop-ins of `directories`, earlier ones masking later ones. A missing directory
 * is skipped; one that cannot be read fails the scan (its masks would be lost), with
 * "DIRECTORY: problem" in `error`. Returns 0 or a negative errno.
 */
int config_dirs_scan(char *const *directories, size_t directory_count,
                     struct config_dirs_list *list, char *error, size_t error_size);

void config_dirs_list_free(struct config_dirs_list *list);

/*
 * Whether a drop-in called `name` exists in any of `directories` (masks and broken entries
 * included); the first path found goes to `path`. A path too long to check counts as found:
 * refusing is the safe answer for a caller that would write there.
 */
bool config_dirs_find(char *const *directories, size_t directory_count, const char *name,
                      char *path, size_t size);

/*
 * Makes the drop-in `name`, loaded from `origin`, go away for good: deletes it from the first
 * directory, and when `origin` lives in a later one, masks it there with a symlink to
 * /dev/null of the same name in the first. Returns 0 or a negative errno, with one line in
 * `error`.
 */
int config_dirs_remove(char *const *directories, size_t directory_count, const char *name,
                       const char *origin, char *error, size_t error_size);

#endif /* VFIO_USERD_CONFIG_DIRS_H */
