/*
 * sfd: what survives sfd itself, under the state directory.
 *
 *   domains/NAME.xml    a defined domain, the XML exactly as given
 *   run/NAME.json       a running VM or clone: one record, made of the
 *                       sections the parts registered (vm.c: process,
 *                       sockets, addresses; net.c: family; forkdir.c:
 *                       its fork; agent-state.c: guest requests)
 *   agent-ids.json      the guest ticket/checkpoint ids handed out
 *   run/NAME.qmp, .serial, .log   the VM's sockets and QEMU's output
 *   run/DOMAIN.fXXXXXX/ a fork's descriptor and page server socket
 *
 * Every file is written to a temporary name, synced and renamed, so a
 * SIGKILL at any instant leaves the old or the new version, never half.
 * A record is written before sfd answers for the VM, and removed only
 * after the VM is gone and its network released.
 *
 * Copyright (c) 2026 snowflock developers
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SFD_STORE_H
#define SFD_STORE_H

#include "sfd.h"

/* A part's members of a VM's record: save adds them to the record
 * object being built, load reads them back into a VM being adopted. */
typedef struct SfdRecordSection {
    const char *name;
    void (*save)(SfdVm *vm, JsonBuilder *b);
    void (*load)(SfdVm *vm, JsonObject *rec);
} SfdRecordSection;

/* Sections are saved and loaded in the order they were registered. */
void sfd_record_register(const SfdRecordSection *s);
/* Write vm's record (a failure is logged: the VM runs on). */
void sfd_record_save(SfdVm *vm);
void sfd_record_drop(SfdVm *vm);
/* Load every section of rec into vm. */
void sfd_record_load(SfdVm *vm, JsonObject *rec);
/* The record files under the run directory (paths). */
GPtrArray *sfd_record_paths(void);

int sfd_store_write_json(const char *path, JsonNode *node, char **err);
JsonNode *sfd_store_read_json(const char *path, char **err);

int sfd_store_save_domain(SfdDomain *d, char **err);
void sfd_store_drop_domain(const char *name);
/* Parse every defined domain into sfd->domains (bad ones are logged). */
void sfd_store_load_domains(void);

#endif
