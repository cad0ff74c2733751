/*
 * `vfio-userctl probe DEVICE_SOCKET`: what a VMM sees on a device socket. probe.c talks to
 * the device and builds a JSON report (the --json output); probe_print.c renders the same
 * report for people, in the spirit of `lspci -vv`.
 */
#ifndef VFIO_USERCTL_PROBE_H
#define VFIO_USERCTL_PROBE_H

#include <stdio.h>
#include <jansson.h>

/* Prints `report` (as probe.c builds it) for people; -ENOMEM or 0. */
int probe_print(FILE *stream, const json_t *report);

/* The names probe gives vfio-pci's region and interrupt indexes ("BAR0", "MSI-X"), or NULL. */
const char *probe_region_name(unsigned index);
const char *probe_irq_name(unsigned index);

#endif /* VFIO_USERCTL_PROBE_H */
