/*
 * nvme I/O command set: Read, Write, Flush, Write Zeroes and Dataset Management, and the
 * two backends (a file or block device, or RAM).
 *
 * The data of a Read or Write goes straight between the backend and guest memory when every
 * PRP span translates (one readv/writev on the translated spans); otherwise it goes
 * through the command's bounce buffer, which the queue code fills or drains with DMA
 * messages.
 *
 * File I/O is asynchronous: Read, Write and Flush (fdatasync) of a file or block device
 * namespace go to the controller's io_uring, whose completions an eventfd on the device's
 * event loop announces (ABI 1.1 add_fd); the command waits in NVME_STAGE_EXECUTED, and
 * other commands of the same queue go on meanwhile. A read first tries preadv2() with
 * RWF_NOWAIT, which takes what the page cache holds without ever blocking (as cheap as the
 * synchronous path); only what it cannot take goes to the ring. io_uring rather than a thread pool,
 * by measurement: at queue depth 1 a thread pool pays two thread wake-ups per command (a tenth of
 * pread's rate on this project's test machine, against about half for io_uring), and it needs locks
 * besides. Before guest memory goes away (DMA unmap, reset, the client leaving) the controller
 * waits for every operation in flight: the kernel cannot cancel a read that is already copying into
 * guest memory. Write Zeroes and Dataset Management's deallocate go to the ring as well, since a
 * fallocate may take as long as the storage likes: one IORING_OP_FALLOCATE per range, all ranges
 * at once, one completion when the last is done and the first error reported; where fallocate
 * cannot (a file system without FALLOC_FL_ZERO_RANGE or holes, a device that cannot zero), the
 * zeros are written from a shared zero buffer, one chunk after the other, as the synchronous
 * path does. RAM namespaces stay synchronous (a memcpy or memset is all there is to do); so does
 * everything with `aio: sync`, or where the kernel refuses io_uring (see vfio-userd-nvme(7)).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
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

/* ---------------------------------------------------------------------------------------
 * io_uring. An operation's user data is the command (a read or write: tag 0; an fdatasync:
 * tag 1) or one of its zeroing operations (tag 2), tagged in the low bits, which alignment
 * leaves free; `outstanding` counts a command's operations.
 */

#define NVME_RING_FSYNC 1u
#define NVME_RING_ZERO  2u
#define NVME_RING_TAGS  3u
_Static_assert(_Alignof(struct nvme_command) > NVME_RING_TAGS &&
                   _Alignof(struct nvme_zero_op) > NVME_RING_TAGS,
               "the ring's tags fit below the alignment of what they tag");

static bool nvme_async(const struct nvme_controller *ctrl, const struct nvme_namespace *ns)
{
    return ctrl->ring_ready && ns->backend == NVME_BACKEND_FILE;
}

static struct io_uring_sqe *nvme_ring_sqe(struct nvme_controller *ctrl)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ctrl->ring);

    if (sqe == NULL) {
        /* The submission ring is full: hand it to the kernel and take a fresh entry. */
        io_uring_submit(&ctrl->ring);
        ctrl->unsubmitted = 0;
        sqe = io_uring_get_sqe(&ctrl->ring);
    }
    return sqe;
}

/* `data`: the command or zeroing operation, with its tag. */
static void nvme_ring_queued(struct nvme_command *cmd, struct io_uring_sqe *sqe, uintptr_t data)
{
    io_uring_sqe_set_data(sqe, (void *)data);
    cmd->outstanding++;
    cmd->ctrl->in_flight++;
    cmd->ctrl->unsubmitted++;
}

/* Queues the read or write of what is left of the command's iovecs. */
static int nvme_ring_rw(struct nvme_command *cmd)
{
    struct io_uring_sqe *sqe = nvme_ring_sqe(cmd->ctrl);
    const struct iovec *iov = &cmd->iov[cmd->io_iov_first];

    if (sqe == NULL)
        return -EBUSY;
    if (cmd->io_write)
        io_uring_prep_writev(sqe, cmd->io_ns->fd, iov, cmd->io_iov_count, cmd->io_offset);
    else
        io_uring_prep_readv(sqe, cmd->io_ns->fd, iov, cmd->io_iov_count, cmd->io_offset);
    nvme_ring_queued(cmd, sqe, (uintptr_t)cmd);
    return 0;
}

static int nvme_ring_fsync(struct nvme_command *cmd, struct nvme_namespace *ns)
{
    struct io_uring_sqe *sqe = nvme_ring_sqe(cmd->ctrl);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fsync(sqe, ns->fd, IORING_FSYNC_DATASYNC);
    nvme_ring_queued(cmd, sqe, (uintptr_t)cmd | NVME_RING_FSYNC);
    return 0;
}

static void nvme_count_io(struct nvme_command *cmd)
{
    struct nvme_controller *ctrl = cmd->ctrl;

    if (cmd->sqe.opcode == NVME_IO_WRITE) {
        ctrl->smart.host_writes++;
        ctrl->smart.data_units_written += cmd->data_length / 512;
    } else if (cmd->sqe.opcode == NVME_IO_READ) {
        ctrl->smart.host_reads++;
        ctrl->smart.data_units_read += cmd->data_length / 512;
    }
}

/* Moves the command's iovecs past `done` bytes. */
static void nvme_iov_advance(struct nvme_command *cmd, uint32_t done)
{
    uint32_t left = done;

    while (left > 0 && cmd->io_iov_count > 0) {
        struct iovec *iov = &cmd->iov[cmd->io_iov_first];
        if (left >= iov->iov_len) {
            left -= (uint32_t)iov->iov_len;
            cmd->io_iov_first++;
            cmd->io_iov_count--;
        } else {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
            left = 0;
        }
    }
    cmd->io_offset += done;
}

/* A read or write moved `done` bytes: the rest goes again, or reads as zeros past the end
 * of the file, or the fdatasync that FUA asks for follows. 0, or -errno to fail it. */
static int nvme_ring_rw_done(struct nvme_command *cmd, uint32_t done)
{
    nvme_iov_advance(cmd, done);
    if (cmd->io_iov_count > 0 && done > 0)
        return nvme_ring_rw(cmd);
    if (cmd->io_iov_count > 0) {
        /* Nothing more to read: past the end of the file, which reads as zeros. */
        if (cmd->io_write)
            return -EIO;
        for (uint32_t i = 0; i < cmd->io_iov_count; i++)
            memset(cmd->iov[cmd->io_iov_first + i].iov_base, 0,
                   cmd->iov[cmd->io_iov_first + i].iov_len);
        cmd->io_iov_count = 0;
    }
    if (cmd->io_flush_after) {
        cmd->io_flush_after = false;
        return nvme_ring_fsync(cmd, cmd->io_ns);
    }
    return 0;
}

/* Zeros for `op`'s next chunk, from the controller's zero buffer. */
static int nvme_ring_zero_write(struct nvme_command *cmd, struct nvme_zero_op *op)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint32_t chunk = op->length < NVME_MAX_TRANSFER ? (uint32_t)op->length : NVME_MAX_TRANSFER;
    struct io_uring_sqe *sqe;

    /* Before the entry is taken: one taken is submitted, whatever it holds. */
    if (ctrl->zeros == NULL) {
        ctrl->zeros = aligned_alloc(NVME_PAGE_SIZE, NVME_MAX_TRANSFER);
        if (ctrl->zeros == NULL)
            return -ENOMEM;
        memset(ctrl->zeros, 0, NVME_MAX_TRANSFER);
    }
    sqe = nvme_ring_sqe(ctrl);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_write(sqe, cmd->io_ns->fd, ctrl->zeros, chunk, op->offset);
    nvme_ring_queued(cmd, sqe, (uintptr_t)op | NVME_RING_ZERO);
    return 0;
}

static int nvme_ring_zero_start(struct nvme_command *cmd, struct nvme_zero_op *op)
{
    int mode = op->deallocate ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
    struct io_uring_sqe *sqe = nvme_ring_sqe(cmd->ctrl);

    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_fallocate(sqe, cmd->io_ns->fd, mode, (off_t)op->offset, (off_t)op->length);
    nvme_ring_queued(cmd, sqe, (uintptr_t)op | NVME_RING_ZERO);
    return 0;
}

/* A zeroing operation's fallocate or write finished with `result`: what nvme_backend_zero()
 * does synchronously, one step at a time. 0, or -errno to fail the command. */
static int nvme_ring_zero_done(struct nvme_command *cmd, struct nvme_zero_op *op, int result)
{
    if (!op->writing) {
        if (result >= 0)
            return 0;
        if (op->deallocate && cmd->io_ns->block_device)
            return 0; /* a hint only: DLFEAT promises nothing for block devices */
        /* No such fallocate here (a file system without the mode, a device that cannot):
         * the zeros are written, so that the blocks read as zeros all the same. */
        op->writing = true;
        return nvme_ring_zero_write(cmd, op);
    }
    if (result < 0)
        return result;
    if (result == 0)
        return -EIO;
    op->offset += (uint64_t)result;
    op->length -= (uint64_t)result;
    return op->length > 0 ? nvme_ring_zero_write(cmd, op) : 0;
}

static const char *nvme_io_name(uint8_t opcode)
{
    switch (opcode) {
    case NVME_IO_READ:
        return "read";
    case NVME_IO_WRITE:
        return "write";
    case NVME_IO_WRITE_ZEROES:
        return "write zeroes";
    case NVME_IO_DSM:
        return "deallocate";
    default:
        return "flush";
    }
}

static void nvme_ring_complete(struct nvme_controller *ctrl, uint64_t data, int result)
{
    uintptr_t tag = (uintptr_t)data & NVME_RING_TAGS;
    struct nvme_zero_op *op = NULL;
    struct nvme_command *cmd;
    int rc = result < 0 ? result : 0;

    if (tag == NVME_RING_ZERO) {
        op = (struct nvme_zero_op *)((uintptr_t)data & ~(uintptr_t)NVME_RING_TAGS);
        cmd = op->cmd;
    } else {
        cmd = (struct nvme_command *)((uintptr_t)data & ~(uintptr_t)NVME_RING_TAGS);
    }
    ctrl->in_flight--;
    /* An abandoned command (its queue or controller reset) only winds down, and so does one
     * that failed already: the first error is the one reported. */
    if (!cmd->abandoned && cmd->io_error == 0) {
        if (op != NULL)
            rc = nvme_ring_zero_done(cmd, op, result);
        else if (rc == 0 && tag != NVME_RING_FSYNC)
            rc = nvme_ring_rw_done(cmd, (uint32_t)result);
    }
    if (rc < 0 && cmd->io_error == 0) {
        cmd->io_error = rc;
        if (op != NULL)
            cmd->io_offset = op->offset;
    }
    cmd->outstanding--;
    if (cmd->outstanding > 0)
        return;
    if (!cmd->abandoned) {
        if (cmd->io_error < 0) {
            nvme_guest_log(ctrl, "namespace %u: %s at byte %llu failed: %s",
                           cmd->io_ns != NULL ? cmd->io_ns->nsid : 0, nvme_io_name(cmd->sqe.opcode),
                           (unsigned long long)cmd->io_offset, strerror(-cmd->io_error));
            cmd->status = nvme_status_of_errno(cmd->io_error, cmd->io_write);
        } else {
            nvme_count_io(cmd);
        }
    }
    nvme_command_resume(cmd);
}

/* Takes every completion there is; how many. */
static unsigned nvme_ring_reap(struct nvme_controller *ctrl)
{
    struct io_uring_cqe *cqe;
    unsigned count = 0;

    while (ctrl->in_flight > 0 && io_uring_peek_cqe(&ctrl->ring, &cqe) == 0) {
        uint64_t data = cqe->user_data;
        int result = cqe->res;

        io_uring_cqe_seen(&ctrl->ring, cqe);
        nvme_ring_complete(ctrl, data, result);
        count++;
    }
    if (ctrl->quiesce_pending && ctrl->in_flight == 0) {
        /* The last operation that could touch guest memory is over. */
        ctrl->quiesce_pending = false;
        ctrl->host->quiesced(ctrl->device);
    }
    return count;
}

static void nvme_ring_submit(struct nvme_controller *ctrl)
{
    if (ctrl->unsubmitted > 0) {
        io_uring_submit(&ctrl->ring);
        ctrl->unsubmitted = 0;
    }
}

bool nvme_ring_kick(struct nvme_controller *ctrl)
{
    if (!ctrl->ring_ready)
        return false;
    nvme_ring_submit(ctrl);
    return nvme_ring_reap(ctrl) > 0;
}

void nvme_ring_drain(struct nvme_controller *ctrl)
{
    bool processing = ctrl->processing;

    if (!ctrl->ring_ready)
        return;
    /* No command starts meanwhile: one would translate memory that is about to go. */
    ctrl->processing = true;
    while (ctrl->in_flight > 0) {
        struct io_uring_cqe *cqe;
        int rc;

        nvme_ring_submit(ctrl);
        rc = io_uring_wait_cqe(&ctrl->ring, &cqe);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN) {
            vfio_userd_log(ctrl->device, VFIO_USERD_LOG_ERR,
                           "waiting for %u I/O operations in flight: %s", ctrl->in_flight,
                           strerror(-rc));
            break;
        }
        nvme_ring_reap(ctrl);
    }
    ctrl->processing = processing;
}

static void nvme_ring_event(void *opaque, int fd, uint32_t revents)
{
    struct nvme_controller *ctrl = opaque;
    uint64_t count;

    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        return;
    nvme_ring_reap(ctrl);
    /* Slots and completion queue room came free: fetch more, raise interrupts. */
    nvme_queues_run(ctrl);
}

static void nvme_kick(void *opaque)
{
    nvme_queues_run(opaque);
}

void nvme_ring_drain_and_resume(struct nvme_controller *ctrl)
{
    if (!ctrl->ring_ready)
        return;
    nvme_ring_drain(ctrl);
    /* Completions posted meanwhile want their interrupts, and entries waiting for a free
     * slot their start: on the next iteration, once the memory map changed. (The ring's
     * eventfd, which those completions signalled, would wake the queues too; the timer
     * says so rather than leaving it to that.) */
    ctrl->host->timer_set(ctrl->device, ctrl->kick_source, 0);
}

int nvme_ring_setup(struct nvme_controller *ctrl)
{
    const struct vfio_userd_host *host = ctrl->host;
    int rc;

    ctrl->ring_eventfd = -1;
    if (!VFIO_USERD_HOST_HAS(host, add_fd))
        return -ENOSYS; /* a host before ABI 1.1 could not tell us of completions */
    rc = io_uring_queue_init(NVME_RING_ENTRIES, &ctrl->ring, 0);
    if (rc < 0)
        return rc;
    ctrl->ring_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctrl->ring_eventfd < 0)
        rc = -errno;
    if (rc == 0)
        rc = io_uring_register_eventfd(&ctrl->ring, ctrl->ring_eventfd);
    if (rc == 0)
        rc = host->add_fd(ctrl->device, ctrl->ring_eventfd, EPOLLIN, nvme_ring_event, ctrl,
                          &ctrl->ring_source);
    if (rc == 0)
        rc = host->add_timer(ctrl->device, VFIO_USERD_TIMER_OFF, nvme_kick, ctrl,
                             &ctrl->kick_source);
    if (rc < 0) {
        ctrl->host->remove_source(ctrl->device, ctrl->ring_source);
        ctrl->ring_source = NULL;
        io_uring_queue_exit(&ctrl->ring);
        if (ctrl->ring_eventfd >= 0)
            close(ctrl->ring_eventfd);
        ctrl->ring_eventfd = -1;
        return rc;
    }
    ctrl->ring_ready = true;
    return 0;
}

void nvme_ring_teardown(struct nvme_controller *ctrl)
{
    if (!ctrl->ring_ready)
        return;
    nvme_ring_drain(ctrl);
    ctrl->host->remove_source(ctrl->device, ctrl->ring_source);
    ctrl->host->remove_source(ctrl->device, ctrl->kick_source);
    ctrl->ring_source = NULL;
    ctrl->kick_source = NULL;
    io_uring_queue_exit(&ctrl->ring);
    close(ctrl->ring_eventfd);
    ctrl->ring_eventfd = -1;
    ctrl->ring_ready = false;
}

bool nvme_io_direct_ok(const struct nvme_command *cmd)
{
    const struct nvme_namespace *ns = nvme_namespace_find(cmd->ctrl, cmd->sqe.nsid);

    if (ns == NULL || !ns->direct)
        return true;
    for (uint32_t i = 0; i < cmd->segment_count; i++)
        if ((uintptr_t)cmd->iov[i].iov_base % ns->direct_align != 0 ||
            cmd->iov[i].iov_len % ns->direct_align != 0)
            return false;
    return true;
}

/* Starts the command's first `count` zeroing operations on the io_uring, all at once; the
 * last completion resumes the command, with the first error if any failed. */
static void nvme_zero_async(struct nvme_command *cmd, struct nvme_namespace *ns, uint32_t count)
{
    int rc = 0;

    cmd->io_ns = ns;
    cmd->io_write = true;
    cmd->io_flush_after = false;
    cmd->io_error = 0;
    cmd->io_offset = count > 0 ? cmd->zero_ops[0].offset : 0;
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        cmd->zero_ops[i].cmd = cmd;
        cmd->zero_ops[i].writing = false;
        rc = nvme_ring_zero_start(cmd, &cmd->zero_ops[i]);
    }
    if (rc < 0 && cmd->outstanding > 0)
        cmd->io_error = rc; /* what went waits for its completions, which report this */
    else if (rc < 0)
        cmd->status = nvme_status_of_errno(rc, true);
}

static int nvme_command_zero_ops(struct nvme_command *cmd)
{
    if (cmd->zero_ops == NULL)
        cmd->zero_ops = calloc(NVME_DSM_RANGES, sizeof(*cmd->zero_ops));
    return cmd->zero_ops != NULL ? 0 : -ENOMEM;
}

/* Starts a Read or Write on the io_uring; the completion resumes the command. */
static void nvme_read_write_async(struct nvme_command *cmd, struct nvme_namespace *ns,
                                  uint64_t offset, bool write, bool flush_after)
{
    int rc;

    if (!cmd->direct) {
        cmd->iov[0].iov_base = cmd->bounce;
        cmd->iov[0].iov_len = cmd->data_length;
        cmd->io_iov_count = 1;
    } else {
        cmd->io_iov_count = cmd->segment_count;
    }
    cmd->io_iov_first = 0;
    cmd->io_ns = ns;
    cmd->io_write = write;
    cmd->io_flush_after = flush_after;
    cmd->io_offset = offset;
    cmd->io_error = 0;
    if (!write && !ns->direct && !ns->no_nowait) {
        /* What the page cache holds is read at once, without the ring: as cheap as a
         * synchronous read, and never blocking (RWF_NOWAIT). The rest goes to the ring. */
        ssize_t done = preadv2(ns->fd, cmd->iov, (int)cmd->io_iov_count, (off_t)offset, RWF_NOWAIT);

        if (done < 0 && (errno == EOPNOTSUPP || errno == EINVAL))
            ns->no_nowait = true;
        if (done == (ssize_t)cmd->data_length) {
            nvme_count_io(cmd);
            return;
        }
        if (done > 0)
            nvme_iov_advance(cmd, (uint32_t)done);
    }
    rc = nvme_ring_rw(cmd);
    if (rc < 0)
        cmd->status = nvme_status_of_errno(rc, write);
}

static void nvme_read_write(struct nvme_command *cmd, struct nvme_namespace *ns, bool write)
{
    struct nvme_controller *ctrl = cmd->ctrl;
    uint64_t offset = ((uint64_t)cmd->sqe.cdw11 << 32 | cmd->sqe.cdw10) << ns->block_shift;
    struct iovec bounce = {cmd->bounce, cmd->data_length};
    bool fua = (cmd->sqe.cdw12 & (1u << 30)) != 0;
    int rc;

    if (nvme_async(ctrl, ns)) {
        nvme_read_write_async(cmd, ns, offset, write,
                              write && (fua || !ctrl->features.write_cache));
        return;
    }
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
    uint32_t ranges = cmd->data_length / 16, count = 0;
    bool async = nvme_async(cmd->ctrl, ns);
    uint8_t list[NVME_DSM_RANGES * 16];
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
    if (async && nvme_command_zero_ops(cmd) < 0) {
        cmd->status = NVME_INTERNAL_ERROR;
        return;
    }
    for (uint32_t i = 0; i < ranges; i++) {
        uint32_t blocks;
        uint64_t slba;
        memcpy(&blocks, list + 16 * i + 4, sizeof(blocks));
        memcpy(&slba, list + 16 * i + 8, sizeof(slba));
        if (blocks == 0)
            continue;
        if (async) {
            /* Every range at once; one completion when the last is done. */
            cmd->zero_ops[count++] = (struct nvme_zero_op){
                .offset = slba << ns->block_shift,
                .length = (uint64_t)blocks << ns->block_shift,
                .deallocate = true,
            };
            continue;
        }
        rc = nvme_backend_zero(cmd, ns, slba << ns->block_shift,
                               (uint64_t)blocks << ns->block_shift, true);
        if (rc < 0) {
            cmd->status = nvme_status_of_errno(rc, true);
            return;
        }
    }
    if (async)
        nvme_zero_async(cmd, ns, count);
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
        if (ctrl->ring_ready) {
            /* fdatasync of each file namespace named, on the io_uring. */
            cmd->io_ns = ns;
            cmd->io_write = true;
            cmd->io_error = 0;
            for (uint32_t i = 0; i < ctrl->namespace_count && rc == 0; i++) {
                struct nvme_namespace *each = &ctrl->namespaces[i];
                if ((ns == NULL || ns == each) && each->fd >= 0 && !each->read_only)
                    rc = nvme_ring_fsync(cmd, each);
            }
        } else if (ns != NULL) {
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
        if (nvme_async(ctrl, ns)) {
            if (nvme_command_zero_ops(cmd) < 0) {
                cmd->status = NVME_INTERNAL_ERROR;
                break;
            }
            cmd->zero_ops[0] = (struct nvme_zero_op){
                .offset = slba << ns->block_shift,
                .length = blocks << ns->block_shift,
                .deallocate = (cmd->sqe.cdw12 & (1u << 25)) != 0,
            };
            nvme_zero_async(cmd, ns, 1);
            break;
        }
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
