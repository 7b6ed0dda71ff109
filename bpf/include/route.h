/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and the backend choice shared by flowplace's routing programs
 * (socket-level load balancing of multi-cluster services).
 *
 * A service is a dialed address:port. Its backends are stored as slots
 * (service id, revision, slot) -> backend (its id and a copy of its
 * address, so a probe is one lookup), tier after tier: tier 0 is the
 * local cluster, then the other clusters in order of measured RTT. Userspace
 * replaces a service's table by writing the other revision's slots, then the
 * service entry (one atomic hash update), then deleting the old slots, so a
 * connect sees one table or the other, never a mix.
 *
 * The choice costs at most RT_MAX_TIERS * RT_PROBES slot and health lookups
 * whatever the number of services and backends: a bounded loop, never a
 * scan. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "route_socks.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

#define RT_MAX_TIERS 8
/* Backends tried in a tier before moving to the next: userspace drops
 * ejected backends from the tables on its next sync, so this only bridges
 * the time until then. */
#define RT_PROBES 4
#define RT_MAX_EJECTION_SHIFT 6

struct fp_route_service_key {
	__u8 addr[16]; /* IPv4 as v4-mapped IPv6 */
	__be16 port;
	__u16 pad;
};

struct fp_route_service {
	__u32 id;
	__u8 rev; /* which revision's slots are live */
	__u8 n_tiers;
	__u16 total; /* slots over all tiers: the fallback when all are ejected */
	__u16 tier_len[RT_MAX_TIERS];
};

struct fp_route_slot_key {
	__u32 service;
	__u16 slot;
	__u8 rev;
	__u8 pad;
};

struct fp_route_backend {
	__u8 addr[16]; /* IPv4 as v4-mapped IPv6 */
	__be16 port;
	__u16 cluster;
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 pad[3];
};

struct fp_route_slot {
	__u32 backend; /* id: route_health's key */
	struct fp_route_backend be;
};

/* Passive health of a backend, written by sock_ops on failed connects. */
struct fp_route_health {
	__u64 ejected_until_ns; /* bpf_ktime_get_ns() clock */
	__u64 last_failure_ns;
	__u32 failures; /* consecutive failed connects */
	__u32 ejections; /* times ejected; doubles the next ejection */
};

struct fp_route_stats_key {
	__u32 service;
	__u16 cluster;
	__u8 tier;
	__u8 fallback;
};

struct fp_route_stats {
	__u64 connects;
	__u64 failed;
};

struct fp_route_config {
	__u32 fail_threshold; /* consecutive failures that eject a backend */
	__u32 pad;
	__u64 base_ejection_ns; /* first ejection; doubled per ejection */
	__u64 max_ejection_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Not preallocated: an update then never reuses an element a
	 * concurrent connect may still be reading. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct fp_route_service_key);
	__type(value, struct fp_route_service);
} route_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct fp_route_slot_key);
	__type(value, struct fp_route_slot);
} route_slots SEC(".maps");

/* id -> backend: userspace's record of the ids it gave (read back when a
 * new agent adopts the pinned tables); the connect path reads the copies
 * in the slots. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct fp_route_backend);
} route_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct fp_route_health);
} route_health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fp_route_stats_key);
	__type(value, struct fp_route_stats);
} route_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_route_config);
} route_config SEC(".maps");

/* The end of the latest ejection of any backend (bpf_ktime_get_ns). Until
 * then connects check each backend's health; after it none is ejected, and
 * the common case costs no health lookup (a miss in a large table). Written
 * by sock_ops only, so a restarted agent keeps it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} route_ejecting SEC(".maps");

static __always_inline void rt_v4_mapped(__u8 dst[16], __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, 4);
}

static __always_inline struct fp_route_stats *rt_stats(struct fp_route_stats_key *k)
{
	struct fp_route_stats *st = bpf_map_lookup_elem(&route_stats, k);
	if (st)
		return st;
	struct fp_route_stats zero = {};
	bpf_map_update_elem(&route_stats, k, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&route_stats, k);
}

static __always_inline int rt_healthy(__u32 backend, __u64 now, int ejecting)
{
	if (!ejecting)
		return 1;
	struct fp_route_health *h = bpf_map_lookup_elem(&route_health, &backend);
	return !h || h->ejected_until_ns <= now;
}

/* Choose a backend for a connect to key: the first tier with a healthy
 * backend, spread at random within it; when every backend is ejected, any
 * backend (routing nowhere would be worse than a backend that may be down).
 * Returns the backend, with rs filled, or NULL when key is no routed
 * service. */
static __always_inline struct fp_route_backend *rt_choose(struct fp_route_service_key *key,
							  struct fp_route_sock *rs)
{
	struct fp_route_service *svc = bpf_map_lookup_elem(&route_services, key);
	if (!svc || svc->total == 0)
		return NULL;
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	__u64 *until = bpf_map_lookup_elem(&route_ejecting, &zero);
	int ejecting = !until || *until > now;
	__u32 r = bpf_get_prandom_u32();
	__u32 off = 0;
	struct fp_route_slot_key sk = { .service = svc->id, .rev = svc->rev };
	for (int t = 0; t < RT_MAX_TIERS; t++) {
		if (t >= svc->n_tiers)
			break;
		__u32 n = svc->tier_len[t];
		for (__u32 i = 0; i < RT_PROBES; i++) {
			if (i >= n)
				break;
			sk.slot = off + (r + i) % n;
			struct fp_route_slot *sl = bpf_map_lookup_elem(&route_slots, &sk);
			if (!sl || !rt_healthy(sl->backend, now, ejecting))
				continue;
			rs->backend = sl->backend;
			rs->tier = t;
			rs->cluster = sl->be.cluster;
			rs->service = svc->id;
			return &sl->be;
		}
		off += n;
	}
	sk.slot = r % svc->total;
	struct fp_route_slot *sl = bpf_map_lookup_elem(&route_slots, &sk);
	if (!sl)
		return NULL;
	rs->backend = sl->backend;
	rs->tier = RT_MAX_TIERS; /* no tier: the fallback */
	rs->fallback = 1;
	rs->cluster = sl->be.cluster;
	rs->service = svc->id;
	return &sl->be;
}

/* A connect that routing leaves alone: forget an earlier routed connect of
 * the same socket (a retried connect), so getpeername tells the truth. */
static __always_inline void rt_unrouted(struct bpf_sock *sk)
{
	bpf_sk_storage_delete(&route_socks, sk);
}

/* Remember the routed socket and count the connect. */
static __always_inline void rt_routed(struct bpf_sock *sk, struct fp_route_sock *rs)
{
	struct fp_route_sock *st_rs = bpf_sk_storage_get(&route_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st_rs)
		*st_rs = *rs;
	struct fp_route_stats_key k = { .service = rs->service, .cluster = rs->cluster, .tier = rs->tier,
					.fallback = rs->fallback };
	struct fp_route_stats *st = rt_stats(&k);
	if (st)
		st->connects++; /* per-CPU: no atomics needed */
}
