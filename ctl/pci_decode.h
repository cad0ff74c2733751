/*
 * Decoding of a PCI function's configuration space for `vfio-userctl probe`: the header,
 * the BARs (sized by the vfio-user region info, as a VMM sizes them), the capability list
 * and the extended capability list, as a JSON object with stable field names.
 *
 * The bytes come from a device server and are not trusted: every pointer and length is
 * checked against the space read, lists that loop or run too long are cut, and each such
 * finding is added to `problems` as a sentence instead of stopping the decode.
 */
#ifndef VFIO_USERCTL_PCI_DECODE_H
#define VFIO_USERCTL_PCI_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* BAR0-BAR5 and the expansion ROM, in vfio's region order. */
#define PCI_DECODE_BAR_REGIONS 7

struct pci_decode_region {
    bool known; /* GET_REGION_INFO answered for it */
    uint64_t size;
};

/* A bit of the command or status register: its JSON flag name and lspci's label. */
struct pci_decode_bit {
    uint16_t mask;
    const char *key;
    const char *label;
};

/* Terminated by an entry with mask 0. */
extern const struct pci_decode_bit pci_decode_command_bits[];
extern const struct pci_decode_bit pci_decode_status_bits[];

/*
 * Decodes `length` bytes of configuration space (at least the 64-byte header; 4096 bytes
 * also decode the extended capabilities). Returns the "pci" object of the probe report, or
 * NULL when out of memory.
 */
json_t *pci_decode(const uint8_t *config, size_t length,
                   const struct pci_decode_region regions[PCI_DECODE_BAR_REGIONS],
                   json_t *problems);

/* The base class's name ("Mass storage controller"), or NULL for a reserved one. */
const char *pci_decode_class_name(uint8_t base_class);

#endif /* VFIO_USERCTL_PCI_DECODE_H */
