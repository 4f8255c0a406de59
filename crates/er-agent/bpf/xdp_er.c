// SPDX-License-Identifier: GPL-2.0
/*
 * ECMP-ER server agent: bounce TCP segments this server has no connection for back to the
 * ECMP-ER router, marked with the next "previous generation", so the router can deliver them
 * to the server that owns the connection.
 *
 * Decisions, in order (each counted in er_stats):
 *   - not IPv4/TCP, or an IP fragment                      -> PASS
 *   - truncated or malformed headers                       -> DROP
 *   - SYN set (a new connection belongs here)              -> PASS, never bounced
 *   - destination not a configured VIP (when filtering)    -> PASS
 *   - a socket owns the 4-tuple (established, request,
 *     time-wait)                                           -> PASS
 *   - ACK at a listener that carries a valid SYN cookie    -> PASS (handshake completes here)
 *   - otherwise: no connection here. If the marker says the packet already went through
 *     max_generation previous generations -> PASS (the stack answers RST); else re-mark,
 *     swap MACs and XDP_TX back to the router.
 *
 * The marker encoding is shared with the router's ecmper stage:
 *   dscp:   DSCP = (m << 2) | 0b11 with m in 1..=15 means "already sent with previous
 *           generation m"; anything else is "current generation" (m = 0). ECN is kept.
 *   compat: the whole ToS byte 0x01 (upstream); bounced once, never twice.
 *
 * Written for switchboard; the Rust side (crates/er-agent/src/lib.rs) mirrors the constants.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Counter indices: keep in sync with `Counter` in src/lib.rs. */
enum er_counter {
	ER_RX_PACKETS = 0,
	ER_RX_BYTES = 1,
	ER_PASS_NOT_TCP = 2,
	ER_PASS_FRAGMENT = 3,
	ER_PASS_SYN = 4,
	ER_PASS_NOT_VIP = 5,
	ER_PASS_SOCKET = 6,
	ER_PASS_COOKIE = 7,
	ER_PASS_GAVE_UP = 8,
	ER_BOUNCED = 9,
	ER_BOUNCED_BYTES = 10,
	ER_DROP_MALFORMED = 11,
	ER_NO_SOCKET = 12,
	ER_LISTENER_NO_COOKIE = 13,
	ER_PASS_NO_CONFIG = 14,
	/* ER_BOUNCED_GEN + g: packets bounced towards previous generation g (1..=15). */
	ER_BOUNCED_GEN = 16,
	ER_NSTATS = 32,
};

#define ER_MARKER_DSCP 0
#define ER_MARKER_COMPAT 1

#define TCP_FLAG_SYN_BIT 0x02

/* Written once by the loader before attaching; read per packet. */
struct er_config {
	__u32 marker;         /* ER_MARKER_* */
	__u32 max_generation; /* 1..=15 */
	__u32 vip_filter;     /* non-zero: bounce only destinations present in er_vips */
	__u32 attach_mode;    /* informational, for `stats`: 0 generic, 1 native */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ER_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} er_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct er_config);
} er_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* IPv4 address, network order */
	__type(value, __u8);
} er_vips SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&er_stats, &idx);

	if (c)
		*c += n; /* per-CPU slot: no atomics needed */
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), in one's complement, byte-order independent. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + (__u32)new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_er(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u32 key0 = 0;

	count(ER_RX_PACKETS, 1);
	count(ER_RX_BYTES, len);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end) {
		count(ER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		count(ER_PASS_NOT_TCP, 1);
		return XDP_PASS;
	}

	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end) {
		count(ER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	if (iph->version != 4 || iph->ihl < 5) {
		count(ER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	if (iph->protocol != IPPROTO_TCP) {
		count(ER_PASS_NOT_TCP, 1);
		return XDP_PASS;
	}
	/* Any fragment (MF set or non-zero offset): the 4-tuple is not reliably present. */
	if (iph->frag_off & bpf_htons(0x3fff)) {
		count(ER_PASS_FRAGMENT, 1);
		return XDP_PASS;
	}

	/* Honour IHL; bounds-check the computed pointer itself (verifier needs th + 1). */
	struct tcphdr *th = (void *)iph + iph->ihl * 4;
	if ((void *)(th + 1) > data_end) {
		count(ER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}
	__u8 doff_byte = ((__u8 *)th)[12];
	__u32 doff = (doff_byte >> 4) * 4;
	if (doff < sizeof(*th) || (void *)th + doff > data_end) {
		count(ER_DROP_MALFORMED, 1);
		return XDP_DROP;
	}

	/* Flags as byte 13: avoids the endian-dependent bitfields of linux/tcp.h. */
	__u8 flags = ((__u8 *)th)[13];
	if (flags & TCP_FLAG_SYN_BIT) {
		count(ER_PASS_SYN, 1);
		return XDP_PASS;
	}

	struct er_config *cfg = bpf_map_lookup_elem(&er_config, &key0);
	if (!cfg) {
		count(ER_PASS_NO_CONFIG, 1);
		return XDP_PASS;
	}
	if (cfg->vip_filter) {
		__u32 daddr = iph->daddr;

		if (!bpf_map_lookup_elem(&er_vips, &daddr)) {
			count(ER_PASS_NOT_VIP, 1);
			return XDP_PASS;
		}
	}

	struct bpf_sock_tuple tup = {};
	tup.ipv4.saddr = iph->saddr;
	tup.ipv4.daddr = iph->daddr;
	tup.ipv4.sport = th->source;
	tup.ipv4.dport = th->dest;

	/* Exactly sizeof(tup.ipv4): the full union size would be taken as IPv6 and miss. */
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &tup, sizeof(tup.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			count(ER_PASS_SOCKET, 1);
			return XDP_PASS;
		}
		long cookie = bpf_tcp_check_syncookie(sk, iph, sizeof(*iph), th, sizeof(*th));
		bpf_sk_release(sk);
		if (cookie == 0) {
			count(ER_PASS_COOKIE, 1);
			return XDP_PASS;
		}
		count(ER_LISTENER_NO_COOKIE, 1);
	} else {
		count(ER_NO_SOCKET, 1);
	}

	/* No connection here: advance the marker by one generation, or give up. */
	__u8 tos = iph->tos;
	__u8 new_tos;
	__u32 gen;
	if (cfg->marker == ER_MARKER_COMPAT) {
		if (tos == 0x01) {
			count(ER_PASS_GAVE_UP, 1);
			return XDP_PASS;
		}
		new_tos = 0x01;
		gen = 1;
	} else {
		__u8 dscp = tos >> 2;
		__u32 m = ((dscp & 0x3) == 0x3) ? (dscp >> 2) : 0;

		gen = m + 1;
		if (gen > cfg->max_generation || gen > 15) {
			count(ER_PASS_GAVE_UP, 1);
			return XDP_PASS;
		}
		new_tos = (__u8)((((gen << 2) | 0x3) << 2) | (tos & 0x3));
	}

	__u16 old_word = *(__u16 *)iph; /* version/IHL + ToS */
	iph->tos = new_tos;
	__u16 new_word = *(__u16 *)iph;
	iph->check = csum_replace16(iph->check, old_word, new_word);

	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	count(ER_BOUNCED, 1);
	count(ER_BOUNCED_BYTES, len);
	count(ER_BOUNCED_GEN + (gen & 0xf), 1);
	return XDP_TX;
}

/*
 * A do-nothing program for the router-facing veth peer. On veth, frames sent with XDP_TX in
 * native mode are only delivered when the peer has a native XDP program (veth_xdp_flush).
 */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
