/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The sockets that routing redirected, keyed by socket cookie. Routing's
 * connect4/6 write it; its getpeername4/6 and sock_ops read it; the
 * measurement programs read it too, so that a connection routed before they
 * ran is still attributed to the service address the application dialed.
 * The routing loader pins it; measurement gets the pinned map (or, without
 * routing, a one-entry stand-in). */
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
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* the loader may resize */
	__type(key, __u64);
	__type(value, struct fp_route_sock);
} route_socks SEC(".maps");
