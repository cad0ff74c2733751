/*
 * nvme I/O command set: Read, Write, Flush, Write Zeroes and Dataset Management, and the
 * two backends (a file or block device, or RAM).
 *
 * The data of a Read or Write goes straight between the backend and guest memory when every
 * PRP span translates (one preadv/pwritev on the translated spans); otherwise it goes
 * through the command's bounce buffer, which the queue code fills or drains with DMA
 * messages. The backend calls are synchronous on the device's thread in this version:
 * ABI 1.0 offers a plugin no way to learn on that thread that an io_uring or a worker
 * thread finished (see vfio-userd-nvme(7)).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "nvme.h"

enum nvme_io_opcode {
    NVME_IO_FLUSH = 0x00,
    NVME_IO_WRITE = 0x01,
    NVME_IO_READ = 0x02,
    NVME_IO_WRITE_ZEROES = 0x08,
    NVME_IO_DSM = 0x09,
};

#define NVME_NSID_ALL 0xffffffffu

struct nvme_namespace *nvme_namespace_find(struct nvme_controller *ctrl, uint32_t nsid)
{
    if (nsid == 0 || nsid > ctrl->namespace_count)
        return NULL;
    return &ctrl->namespaces[nsid - 1];
}

int nvme_namespace_flush(struct nvme_namespace *ns)
{
    if (ns->fd < 0 || ns->read_only)
        return 0;
    return fdatasync(ns->fd) < 0 ? -errno : 0;
}

static uint16_t nvme_status_of_errno(int rc, bool write)
{
    switch (rc) {
    case -ENOSPC:
        return NVME_CAPACITY_EXCEEDED;
    case -EFAULT:
        return NVME_DATA_TRANSFER_ERROR; /* the guest memory went away under the copy */
    case -EIO:
        return write ? NVME_WRITE_FAULT : NVME_UNRECOVERED_READ_ERROR;
    default:
        return NVME_INTERNAL_ERROR;
    }
}

/* The whole of `iov`, looping over short transfers; reads past the end of a file give
 * zeros. `iov` is consumed. */
static int nvme_file_transfer(int fd, struct iovec *iov, int count, uint64_t offset, bool write)
{
    while (count > 0) {
        ssize_t done =
            write ? pwritev(fd, iov, count, (off_t)offset) : preadv(fd, iov, count, (off_t)offset);
        if (done < 0 && errno == EINTR)
            continue;
        if (done < 0)
            return -errno;
        if (done == 0) {
            if (write)
                return -EIO;
            for (int i = 0; i < count; i++)
                memset(iov[i].iov_base, 0, iov[i].iov_len);
            return 0;
        }
        offset += (uint64_t)done;
        while (done > 0 && count > 0) {
            if ((size_t)done >= iov->iov_len) {
                done -= (ssize_t)iov->iov_len;
                iov++;
                count--;
            } else {
                iov->iov_base = (uint8_t *)iov->iov_base + done;
                iov->iov_len -= (size_t)done;
                done = 0;
            }
        }
    }
    return 0;
}

static int nvme_backend_transfer(struct nvme_namespace *ns, struct iovec *iov, int count,
                                 uint64_t offset, bool write)
{
    if (ns->backend == NVME_BACKEND_FILE)
        return nvme_file_transfer(ns->fd, iov, count, offset, write);
    for (int i = 0; i < count; i++) {
        if (write)
            memcpy(ns->memory + offset, iov[i].iov_base, iov[i].iov_len);
        else
            memcpy(iov[i].iov_base, ns->memory + offset, iov[i].iov_len);
        offset += iov[i].iov_len;
    }
    return 0;
}

/* Zeros [offset, offset + length): a hole when `deallocate`, else zeroed blocks. Falls back
 * to writing zeros, so that deallocated blocks always read as zeros (DLFEAT). */
static int nvme_backend_zero(struct nvme_command *cmd, struct nvme_namespace *ns, uint64_t offset,
                             uint64_t length, bool deallocate)
{
    int mode = deallocate ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
    int rc;

    if (ns->backend == NVME_BACKEND_RAM) {
        memset(ns->memory + offset, 0, length);
        return 0;
    }
    if (fallocate(ns->fd, mode, (off_t)offset, (off_t)length) == 0)
        return 0;
    if (deallocate && ns->block_device)
        return 0; /* a hint only: DLFEAT promises nothing for block devices */
    rc = nvme_command_bounce(cmd);
    if (rc < 0)
        return rc;
    memset(cmd->bounce, 0, NVME_MAX_TRANSFER);
    while (length > 0) {
        struct iovec iov = {cmd->bounce, length < NVME_MAX_TRANSFER ? length : NVME_MAX_TRANSFER};
        uint64_t chunk = iov.iov_len;
        rc = nvme_file_transfer(ns->fd, &iov, 1, offset, true);
        if (rc < 0)
            return rc;
        offset += chunk;
        length -= chunk;
    }
    return 0;
}

/* Whether [slba, slba + blocks) lies inside the namespace. */
static bool nvme_lba_range_ok(const struct nvme_namespace *ns, uint64_t slba, uint64_t blocks)
{
    uint64_t size = nvme_namespace_blocks(ns);

    return slba <= size && blocks <= size - slba;
}

void nvme_io_decode(struct nvme_command *cmd)
{
    struct nvme_namespace *ns = nvme_namespace_find(cmd->ctrl, cmd->sqe.nsid);
    uint8_t opcode = cmd->sqe.opcode;
    uint64_t slba = (uint64_t)cmd->sqe.cdw11 << 32 | cmd->sqe.cdw10;
    uint64_t blocks = (uint64_t)(cmd->sqe.cdw12 & 0xffff) + 1;

    if (opcode != NVME_IO_FLUSH && opcode != NVME_IO_WRITE && opcode != NVME_IO_READ &&
        opcode != NVME_IO_WRITE_ZEROES && opcode != NVME_IO_DSM) {
        cmd->status = NVME_INVALID_OPCODE;
        return;
    }
    if (ns == NULL && !(opcode == NVME_IO_FLUSH && cmd->sqe.nsid == NVME_NSID_ALL)) {
        cmd->status = NVME_INVALID_NAMESPACE;
        return;
    }
    switch (opcode) {
    case NVME_IO_READ:
    case NVME_IO_WRITE:
        if (!nvme_lba_range_ok(ns, slba, blocks)) {
            cmd->status = NVME_LBA_OUT_OF_RANGE;
            return;
        }
        if ((blocks << ns->block_shift) > NVME_MAX_TRANSFER) {
            cmd->status = NVME_INVALID_FIELD;
            return;
        }
        if (opcode == NVME_IO_WRITE && ns->read_only) {
            cmd->status = NVME_NS_WRITE_PROTECTED;
            return;
        }
        cmd->data_length = (uint32_t)(blocks << ns->block_shift);
        cmd->data_to_guest = opcode == NVME_IO_READ;
        break;
    case NVME_IO_WRITE_ZEROES:
        if (!nvme_lba_range_ok(ns, slba, blocks)) {
            cmd->status = NVME_LBA_OUT_OF_RANGE;
            return;
        }
        if (ns->read_only)
            cmd->status = NVME_NS_WRITE_PROTECTED;
        break;
    case NVME_IO_DSM:
        if ((cmd->sqe.cdw11 & 0x4) != 0 && ns->read_only) {
            cmd->status = NVME_NS_WRITE_PROTECTED;
            return;
        }
        cmd->data_length = ((cmd->sqe.cdw10 & 0xff) + 1) * 16;
        cmd->data_to_guest = false;
        break;
    case NVME_IO_FLUSH:
    default:
        break;
    }
}

static void nvme_read_write(struct nvme_command *cmd, struct nvme_namespace *ns, bool write)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint64_t offset = ((uint64_t)cmd->sqe.cdw11 << 32 | cmd->sqe.cdw10) << ns->block_shift;
    struct iovec bounce = {cmd->bounce, cmd->data_length};
    bool fua = (cmd->sqe.cdw12 & (1u << 30)) != 0;
    int rc;

    if (cmd->direct)
        rc = nvme_backend_transfer(ns, cmd->iov, (int)cmd->segment_count, offset, write);
    else
        rc = nvme_backend_transfer(ns, &bounce, 1, offset, write);
    if (rc == 0 && write && (fua || !ctrl->features.write_cache))
        rc = nvme_namespace_flush(ns);
    if (rc < 0) {
        nvme_guest_log(ctrl, "namespace %u: %s at byte %llu failed: %s", ns->nsid,
                       write ? "write" : "read", (unsigned long long)offset, strerror(-rc));
        cmd->status = nvme_status_of_errno(rc, write);
        return;
    }
    if (write) {
        ctrl->smart.host_writes++;
        ctrl->smart.data_units_written += cmd->data_length / 512;
    } else {
        ctrl->smart.host_reads++;
        ctrl->smart.data_units_read += cmd->data_length / 512;
    }
}

static void nvme_dataset_management(struct nvme_command *cmd, struct nvme_namespace *ns)
{
    uint32_t ranges = cmd->data_length / 16;
    uint8_t list[256 * 16];
    int rc;

    if ((cmd->sqe.cdw11 & 0x4) == 0)
        return; /* only attributes: hints this controller may ignore */
    /* The list leaves the bounce buffer, which zeroing may reuse. At most 256 ranges. */
    memcpy(list, cmd->bounce, cmd->data_length);
    /* Check every range before touching any, so a bad one changes nothing. */
    for (uint32_t i = 0; i < ranges; i++) {
        uint32_t blocks;
        uint64_t slba;
        memcpy(&blocks, list + 16 * i + 4, sizeof(blocks));
        memcpy(&slba, list + 16 * i + 8, sizeof(slba));
        if (!nvme_lba_range_ok(ns, slba, blocks)) {
            cmd->status = NVME_LBA_OUT_OF_RANGE;
            return;
        }
    }
    for (uint32_t i = 0; i < ranges; i++) {
        uint32_t blocks;
        uint64_t slba;
        memcpy(&blocks, list + 16 * i + 4, sizeof(blocks));
        memcpy(&slba, list + 16 * i + 8, sizeof(slba));
        if (blocks == 0)
            continue;
        rc = nvme_backend_zero(cmd, ns, slba << ns->block_shift,
                               (uint64_t)blocks << ns->block_shift, true);
        if (rc < 0) {
            cmd->status = nvme_status_of_errno(rc, true);
            return;
        }
    }
}

void nvme_io_execute(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    struct nvme_namespace *ns = nvme_namespace_find(ctrl, cmd->sqe.nsid);
    uint64_t slba = (uint64_t)cmd->sqe.cdw11 << 32 | cmd->sqe.cdw10;
    uint64_t blocks = (uint64_t)(cmd->sqe.cdw12 & 0xffff) + 1;
    int rc = 0;

    switch (cmd->sqe.opcode) {
    case NVME_IO_READ:
        nvme_read_write(cmd, ns, false);
        break;
    case NVME_IO_WRITE:
        nvme_read_write(cmd, ns, true);
        break;
    case NVME_IO_FLUSH:
        if (ns != NULL) {
            rc = nvme_namespace_flush(ns);
        } else {
            for (uint32_t i = 0; i < ctrl->namespace_count && rc == 0; i++)
                rc = nvme_namespace_flush(&ctrl->namespaces[i]);
        }
        if (rc < 0)
            cmd->status = nvme_status_of_errno(rc, true);
        break;
    case NVME_IO_WRITE_ZEROES:
        /* DEAC (bit 25) lets the blocks be deallocated: a hole in a file. */
        rc = nvme_backend_zero(cmd, ns, slba << ns->block_shift, blocks << ns->block_shift,
                               (cmd->sqe.cdw12 & (1u << 25)) != 0);
        if (rc < 0)
            cmd->status = nvme_status_of_errno(rc, true);
        break;
    case NVME_IO_DSM:
        nvme_dataset_management(cmd, ns);
        break;
    default:
        break;
    }
}
