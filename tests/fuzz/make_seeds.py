#!/usr/bin/env python3
# Writes the seed corpus of tests/fuzz/fuzz_message.c into tests/fuzz/seeds/message/: short client
# conversations with the fuzzer's device model (fuzzdev), one per feature, so the fuzzer
# starts from well-formed messages instead of discovering the framing itself.
# See fuzz_message.c for the input format (the Error field of a command asks for fds).
import json
import os
import struct
import sys

COMMAND, REPLY = 0x0, 0x1
NO_REPLY = 1 << 4
VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS = 1, 2, 3, 4, 5, 6
GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE, DMA_READ, DMA_WRITE = 7, 8, 9, 10, 11, 12
RESET, WRITE_MULTI = 13, 15
CONFIG, BAR0, BAR1, BAR2, BAR4, ROM = 7, 0, 1, 2, 4, 6
# VFIO_IRQ_SET_* flags.
DATA_NONE, DATA_BOOL, DATA_EVENTFD = 1, 2, 4
ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER = 8, 16, 32
INTX, MSI, MSIX, ERR = 0, 1, 2, 3
# fuzzdev's config space: PM at 0x40, MSI at 0x48, MSI-X at 0x60.
MSI_CONTROL, MSIX_CONTROL = 0x4A, 0x62

next_id = [0]


def message(command, payload=b"", flags=COMMAND, error=0, message_id=None):
    if message_id is None:
        next_id[0] += 1
        message_id = next_id[0]
    return struct.pack("<HHIII", message_id, command, 16 + len(payload), flags, error) + payload


def version(capabilities=None, major=0, minor=0, nul=True):
    data = b""
    if capabilities is not None:
        data = json.dumps({"capabilities": capabilities}, separators=(",", ":")).encode()
        if nul:
            data += b"\0"
    return message(VERSION, struct.pack("<HH", major, minor) + data)


def read(region, offset, count, **kw):
    return message(REGION_READ, struct.pack("<QII", offset, region, count), **kw)


def write(region, offset, data, **kw):
    return message(REGION_WRITE, struct.pack("<QII", offset, region, len(data)) + data, **kw)


def reg(offset, value, **kw):
    return write(BAR0, offset, struct.pack("<I", value), **kw)


def dma_map(address, size, flags=3, offset=0, fds=0):
    return message(DMA_MAP, struct.pack("<IIQQQ", 32, flags, offset, address, size), error=fds)


def dma_unmap(address, size, flags=0):
    return message(DMA_UNMAP, struct.pack("<IIQQ", 24, flags, address, size))


def set_irqs(flags, index, start, count, data=b"", fds=0):
    payload = struct.pack("<IIIII", 20 + len(data), flags, index, start, count) + data
    return message(SET_IRQS, payload, error=fds)


SAME_READ = 1 << 7  # Error bits of a command: see fuzz_message.c


def dma_program(address, length, go, repeats=0):
    return (reg(0x10, address & 0xFFFFFFFF) + reg(0x14, address >> 32) + reg(0x18, length) +
            reg(0x20, repeats) + reg(0x1C, go))


QEMU_CAPABILITIES = {
    "max_msg_fds": 16,
    "max_data_xfer_size": 1048576,
    "pgsizes": 4096,
    "max_dma_maps": 65535,
    "migration": {"max_bitmap_size": 268435456, "pgsize": 4096},
    "write_multiple": True,
}


def seeds():
    yield "version_qemu", version(QEMU_CAPABILITIES)
    yield "version_bad_json", version(None) + message(VERSION, b"\0\0{\"capabilities\":[]}\0")

    yield "regions", (version(None) + read(CONFIG, 0, 256) + reg(0x00, 0x12345678) +
                      read(BAR0, 0, 4) + read(BAR1, 0x10, 2) + write(BAR1, 0, b"\x01") +
                      write(BAR2, 0x100, b"fuzz" * 4) + read(BAR2, 0xFC, 24) +
                      read(ROM, 0, 16) + reg(0x04, 0, flags=NO_REPLY) + read(BAR0, 2, 4))

    yield "info", (version(None) + message(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0)) +
                   message(GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 0, BAR2, 0, 0, 0)) +
                   message(GET_REGION_INFO, struct.pack("<IIIIQQ", 80, 0, BAR2, 0, 0, 0)) +
                   message(GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 0, CONFIG, 0, 0, 0)) +
                   message(GET_REGION_IO_FDS, struct.pack("<IIII", 16, 0, BAR0, 0)) +
                   message(GET_IRQ_INFO, struct.pack("<IIII", 16, 0, ERR, 0)))

    yield "dma_memfd", (version(QEMU_CAPABILITIES) + dma_map(0x10000, 0x10000, fds=1) +
                        dma_map(0x40000, 0x1000, flags=1, offset=0x100, fds=1) +
                        reg(0x00, 0) + dma_program(0x10010, 64, 4) + dma_program(0x40000, 64, 3) +
                        dma_program(0x10000, 128, 2, repeats=2) + dma_program(0x10100, 32, 0x101) +
                        dma_unmap(0x10000, 0x10000) + dma_unmap(0, 0, flags=2))

    # Message-based DMA on the main socket, in 64-byte chunks: the server's DMA_READ and
    # DMA_WRITE commands get ids 1, 2, ... and the replies below answer them.
    chunk = 64
    yield "dma_messages", (
        version({"max_data_xfer_size": chunk}) + dma_map(0x100000, 0x100000) +
        dma_program(0x100000, 100, 1) +
        message(DMA_READ, struct.pack("<QQ", 0x100000, chunk) + b"\xaa" * chunk, flags=REPLY,
                message_id=1) +
        message(DMA_READ, struct.pack("<QQ", 0x100040, 36) + b"\x55" * 36, flags=REPLY,
                message_id=2) +
        dma_program(0x100000, 16, 2) +
        message(DMA_WRITE, struct.pack("<QQ", 0x100000, 16), flags=REPLY, message_id=3) +
        dma_program(0x100000, 16, 1) +
        message(DMA_READ, b"", flags=REPLY | (1 << 5), error=14, message_id=4))

    # The same over a twin socket, with QEMU's 12-byte DMA_READ reply layout.
    yield "dma_twin", (
        version({"twin_socket": {"supported": True}}) + dma_map(0, 0x1000, flags=1) +
        dma_program(0x800, 8, 1) +
        message(DMA_READ, struct.pack("<QI", 0x800, 8) + b"12345678", flags=REPLY, message_id=1) +
        read(BAR0, 0x24, 4) + message(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), error=0x40))

    # The layouts of DMA replies: QEMU's DMA_READ reply (a 32-bit count, the data at 12, then
    # 4 bytes of padding), one both layouts read (decided by the first), QEMU's bare
    # DMA_WRITE reply and the spec's 12-byte one, then a wrong count, a wrong address and a
    # switch to the 64-bit count, each of which fails its transfer.
    data = bytes(range(1, 33))
    yield "dma_layouts", (
        version(QEMU_CAPABILITIES) + dma_map(0x100000, 0x100000) +
        dma_program(0x100000, 32, 1) +
        message(DMA_READ, struct.pack("<QI", 0x100000, 32) + data + b"\0" * 4, flags=REPLY,
                message_id=1) +
        dma_program(0x100000, 32, 1) +
        message(DMA_READ, struct.pack("<QI", 0x100000, 32) + b"\0" * 4 + data[4:] + b"\0" * 4,
                flags=REPLY, message_id=2) +
        dma_program(0x100000, 16, 2) + message(DMA_WRITE, b"", flags=REPLY, message_id=3) +
        dma_program(0x100000, 16, 2) +
        message(DMA_WRITE, struct.pack("<QI", 0x100000, 16), flags=REPLY, message_id=4) +
        dma_program(0x100000, 16, 1) +
        message(DMA_READ, struct.pack("<QI", 0x100000, 12) + data[:16] + b"\0" * 4, flags=REPLY,
                message_id=5) +
        dma_program(0x100000, 16, 1) +
        message(DMA_READ, struct.pack("<QQ", 0x100010, 16) + data[:16], flags=REPLY,
                message_id=6) +
        dma_program(0x100000, 16, 1) +
        message(DMA_READ, struct.pack("<QQ", 0x100000, 16) + data[:16], flags=REPLY,
                message_id=7) +
        read(BAR0, 0x24, 4))

    # Both engines at once: the second request waits behind the first.
    yield "dma_queued", (
        version(None) + dma_map(0x0, 0x10000) + dma_program(0x100, 8, 0x001) +
        dma_program(0x200, 8, 0x102) +
        message(DMA_READ, struct.pack("<QQ", 0x100, 8) + b"A" * 8, flags=REPLY, message_id=1) +
        message(DMA_WRITE, struct.pack("<QQ", 0x200, 8), flags=REPLY, message_id=2) +
        read(BAR0, 0x24, 4) + read(BAR0, 0x2C, 4))

    # A client that takes no descriptors, then replies batched in one read: fd-carrying
    # replies pile up behind plain ones.
    region_info = message(GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 0, BAR2, 0, 0, 0),
                          error=SAME_READ)
    yield "no_fds", version({"max_msg_fds": 0}) + message(
        GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 0, BAR2, 0, 0, 0))
    yield "batched", (version(None) + read(CONFIG, 0, 4, error=SAME_READ) + region_info * 3 +
                      read(CONFIG, 0, 4, error=SAME_READ) + region_info * 6 + read(CONFIG, 0, 4))

    yield "set_irqs", (
        version(None) + set_irqs(DATA_EVENTFD | ACTION_TRIGGER, INTX, 0, 1, fds=1) +
        set_irqs(DATA_EVENTFD | ACTION_UNMASK, INTX, 0, 1, fds=1) + reg(0x04, 0) +
        set_irqs(DATA_NONE | ACTION_UNMASK, INTX, 0, 1) +
        set_irqs(DATA_NONE | ACTION_TRIGGER, INTX, 0, 0) +
        set_irqs(DATA_EVENTFD | ACTION_TRIGGER, MSIX, 0, 8, fds=8) +
        write(CONFIG, 0x04, struct.pack("<H", 0x0406)) +
        write(CONFIG, MSIX_CONTROL, struct.pack("<H", 0x8000)) +
        write(BAR4, 0x0C, struct.pack("<I", 0)) + reg(0x04, 0) + reg(0x04, 3) +
        read(BAR4, 0x1000, 8) + set_irqs(DATA_BOOL | ACTION_MASK, MSIX, 2, 2, b"\x01\x00") +
        set_irqs(DATA_EVENTFD | ACTION_TRIGGER, MSIX, 4, 2) +
        set_irqs(DATA_EVENTFD | ACTION_TRIGGER, MSI, 0, 4, fds=4) +
        write(CONFIG, MSI_CONTROL, struct.pack("<H", 0x0021)) + reg(0x04, 1) +
        reg(0x08, (ERR << 8) | 0) + message(RESET))

    entries = [(0x0, BAR0, 4, b"\x11\x22\x33\x44"), (0x20, BAR2, 8, b"abcdefgh")]
    payload = struct.pack("<Q", len(entries))
    for offset, region, count, data in entries:
        payload += struct.pack("<QII", offset, region, count) + data.ljust(8, b"\0")
    yield "write_multi", (version({"write_multiple": True}) + message(WRITE_MULTI, payload) +
                          message(WRITE_MULTI, payload, flags=NO_REPLY))

    yield "before_version", (read(CONFIG, 0, 4) + message(GET_INFO, b"", flags=0x40) +
                             version(None) + read(CONFIG, 0, 4))
    yield "version_major", version(None, major=1) + read(CONFIG, 0, 4)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                                   "seeds", "message")
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds():
        next_id[0] = 0
        with open(os.path.join(directory, name), "wb") as seed:
            seed.write(data)


if __name__ == "__main__":
    main()
