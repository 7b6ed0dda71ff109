/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The sockets that routing redirected: socket-local storage, so a lookup is
 * a pointer on the socket rather than a hash walk, and an entry lives and
 * dies with its socket (no eviction, no delete at close). Routing's
 * connect4/6 write it; its getpeername4/6 and sock_ops read it; the
 * measurement programs read it too, so that a connection routed before they
 * ran is still attributed to the service address the application dialed.
 * The routing loader pins it, and pinned the storage outlives an agent;
 * measurement gets the pinned map (or, without routing, a stand-in). */
#pragma once

struct fp_route_sock {
	__u8 vip[16]; /* dialed service address; IPv4 as v4-mapped IPv6 */
	__be16 vip_port;
	__u16 cluster; /* cluster index of the chosen backend */
	__u32 service; /* service id */
	__u32 backend; /* backend id */
	__u8 tier; /* tier the backend was chosen from */
	__u8 fallback; /* every tier was ejected: chosen from all backends */
	__u8 failed; /* a failure of this connect was already counted */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fp_route_sock);
} route_socks SEC(".maps");

/* The routing state of sk (any socket pointer the program holds), or NULL.
 * sk is read once: the verifier must see the NULL check on the register
 * that the helper gets (a context field read twice is two registers). */
#define route_sock_of(sk)                                                                  \
	({                                                                                 \
		void *__sk = (void *)(sk);                                                 \
		(struct fp_route_sock *)(__sk ? bpf_sk_storage_get(&route_socks, __sk, 0, 0) : 0); \
	})
