//! A minimal eBPF assembler: just the instructions our two programs use.
//!
//! Hand-assembling keeps the build free of clang/libbpf. Each instruction is the kernel's
//! `struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; }`, little-endian on the
//! hosts we run on (encoded with `to_le_bytes`, and the kernel reads native order: these
//! programs are only ever loaded on the machine that built them).

/// One 8-byte eBPF instruction, laid out exactly like the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high nibble.
    pub regs: u8,
    /// Signed offset (memory ops, jumps).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// eBPF registers used by name.
pub mod reg {
    /// Return value / helper result.
    pub const R0: u8 = 0;
    /// First argument; holds the context pointer on entry.
    pub const R1: u8 = 1;
    /// Second argument.
    pub const R2: u8 = 2;
    /// Third argument.
    pub const R3: u8 = 3;
    /// Fourth argument.
    pub const R4: u8 = 4;
    /// Callee-saved.
    pub const R6: u8 = 6;
    /// Read-only frame pointer.
    pub const R10: u8 = 10;
}

// Opcode pieces (include/uapi/linux/bpf.h, bpf_common.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_ATOMIC: u8 = 0xc0;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_SUB: u8 = 0x10;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JLT: u8 = 0xa0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// `src_reg` value of an `ld_imm64` whose immediate is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;

/// Helper ids (enum bpf_func_id).
pub mod func {
    /// `void *bpf_map_lookup_elem(map, key)`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `long bpf_redirect(ifindex, flags)`.
    pub const REDIRECT: i32 = 23;
}

/// XDP verdicts (enum xdp_action).
pub mod xdp_action {
    /// Drop the frame.
    pub const XDP_DROP: i32 = 1;
    /// Pass the frame to the stack.
    pub const XDP_PASS: i32 = 2;
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        }
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
    }

    /// `dst = src` (64-bit).
    pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
    }

    /// `dst += imm` (64-bit).
    pub const fn add64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
    }

    /// `dst -= src` (64-bit).
    pub const fn sub64_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU64 | BPF_SUB | BPF_X, dst, src, 0, 0)
    }

    /// `dst = *(u32 *)(src + off)`.
    pub const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }

    /// `*(u32 *)(dst + off) = imm`.
    pub const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(BPF_ST | BPF_MEM | BPF_W, dst, 0, off, imm)
    }

    /// `*(u16 *)(dst + off) = imm`.
    pub const fn st_h(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(BPF_ST | BPF_MEM | BPF_H, dst, 0, off, imm)
    }

    /// `*(u8 *)(dst + off) = imm`.
    pub const fn st_b(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(BPF_ST | BPF_MEM | BPF_B, dst, 0, off, imm)
    }

    /// `dst = *(u64 *)(src + off)`.
    pub const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_DW, dst, src, off, 0)
    }

    /// `*(u64 *)(dst + off) = src`.
    pub const fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_STX | BPF_MEM | BPF_DW, dst, src, off, 0)
    }

    /// `if dst < imm goto pc + 1 + off` (unsigned).
    pub const fn jlt_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JLT | BPF_K, dst, 0, off, imm)
    }

    /// `if dst > src goto pc + 1 + off` (unsigned).
    pub const fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JGT | BPF_X, dst, src, off, 0)
    }

    /// `lock *(u64 *)(dst + off) += src` (BPF_ATOMIC | BPF_ADD, the old XADD).
    pub const fn atomic_add64(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_STX | BPF_ATOMIC | BPF_DW, dst, src, off, BPF_ADD as i32)
    }

    /// `if dst == imm goto pc + 1 + off`.
    pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
    }

    /// Call helper `id`.
    pub const fn call(id: i32) -> Insn {
        Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, id)
    }

    /// Return r0.
    pub const fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    /// `dst = map (by fd)`: the two-slot `ld_imm64` with `src_reg = BPF_PSEUDO_MAP_FD`.
    pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [
            Insn::new(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }

    /// The instruction's 8 wire bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// The generator program: `return bpf_redirect(ifindex, 0);`.
///
/// In live-frames mode every `XDP_REDIRECT` verdict transmits the frame out of `ifindex`.
pub fn redirect_prog(ifindex: u32) -> Vec<Insn> {
    vec![
        // ifindex values fit in i32 (the kernel allocates them as positive ints).
        Insn::mov64_imm(reg::R1, ifindex as i32),
        Insn::mov64_imm(reg::R2, 0),
        Insn::call(func::REDIRECT),
        Insn::exit(),
    ]
}

/// How many leading template bytes [`redirect_rewrite_prog`] rewrites on every run: all the
/// headers a forwarding dut may edit in place (Ethernet, IPv4, UDP, with room for options).
pub const REWRITE_MAX: usize = 64;

/// The generator program that survives in-place edits by the receiver: rewrite the first
/// `min(len, 64)` bytes of the frame from `template`, then `return bpf_redirect(ifindex, 0)`.
///
/// Live-frames mode recycles its pages and only re-initialises them when the program moved
/// `data`/`data_end`; a kernel router that rewrote MACs and TTL in the page would otherwise
/// get its own output back as input on the page's next use.
pub fn redirect_rewrite_prog(ifindex: u32, template: &[u8]) -> Vec<Insn> {
    use reg::*;
    let n = template.len().min(REWRITE_MAX);
    let mut stores = Vec::new();
    let mut off = 0usize;
    while off < n {
        let left = n - off;
        let (insn, w) = if left >= 4 {
            let b = [
                template[off],
                template[off + 1],
                template[off + 2],
                template[off + 3],
            ];
            (Insn::st_w(R2, off as i16, i32::from_le_bytes(b)), 4)
        } else if left >= 2 {
            let b = [template[off], template[off + 1]];
            (
                Insn::st_h(R2, off as i16, i32::from(u16::from_le_bytes(b))),
                2,
            )
        } else {
            (Insn::st_b(R2, off as i16, i32::from(template[off])), 1)
        };
        stores.push(insn);
        off += w;
    }
    let mut p = vec![
        Insn::ldx_w(R2, R1, 0),  // r2 = ctx->data
        Insn::ldx_w(R3, R1, 4),  // r3 = ctx->data_end
        Insn::mov64_reg(R4, R2), //
        Insn::add64_imm(R4, n as i32),
        // Too short: skip to the XDP_DROP at the end.
        Insn::jgt_reg(R4, R3, stores.len() as i16 + 4),
    ];
    p.extend(stores);
    p.extend(redirect_prog(ifindex));
    p.push(Insn::mov64_imm(R0, xdp_action::XDP_DROP));
    p.push(Insn::exit());
    p
}

/// Denominator of [`thinned_redirect_prog`]'s ratio.
pub const THIN_DEN: i32 = 1 << 20;

/// [`redirect_rewrite_prog`] that transmits only `num / THIN_DEN` of its runs, evenly spread
/// (a per-CPU credit counter in slot 0 of `credit_map`), and drops the rest.
///
/// A live-frames test run cannot pause, and each run has a fixed teardown cost of tens of
/// milliseconds, so rate limiting by issuing tiny runs does not work; thinning inside the
/// program gives an evenly spaced stream at any rate below the generator's maximum.
pub fn thinned_redirect_prog(
    ifindex: u32,
    template: &[u8],
    credit_map: i32,
    num: i32,
) -> Vec<Insn> {
    use reg::*;
    let body = redirect_rewrite_prog(ifindex, template);
    let l = body.len() as i16;
    let [ld0, ld1] = Insn::ld_map_fd(R1, credit_map);
    let mut p = vec![
        Insn::mov64_reg(R6, R1),            // 0: r6 = ctx
        Insn::st_w(R10, -4, 0),             // 1: key = 0
        ld0,                                // 2: r1 = map
        ld1,                                // 3
        Insn::mov64_reg(R2, R10),           // 4
        Insn::add64_imm(R2, -4),            // 5: r2 = &key
        Insn::call(func::MAP_LOOKUP_ELEM),  // 6
        Insn::jeq_imm(R0, 0, 7 + l),        // 7: NULL -> drop
        Insn::ldx_dw(R1, R0, 0),            // 8: r1 = credit
        Insn::add64_imm(R1, num),           // 9: credit += num
        Insn::jlt_imm(R1, THIN_DEN, 3 + l), // 10: not enough -> store, drop
        Insn::add64_imm(R1, -THIN_DEN),     // 11: spend one frame's worth
        Insn::stx_dw(R0, R1, 0),            // 12
        Insn::mov64_reg(R1, R6),            // 13: r1 = ctx for the body
    ];
    p.extend(body); // 14 .. 14+l: rewrite + redirect (exits)
    p.push(Insn::stx_dw(R0, R1, 0)); // 14+l: store credit
    p.push(Insn::mov64_imm(R0, xdp_action::XDP_DROP)); // 15+l
    p.push(Insn::exit());
    p
}

/// The sink program: count packets and bytes in slot 0 of a per-CPU array of
/// `{ u64 packets; u64 bytes; }`, then return `verdict` (normally `XDP_DROP`).
pub fn count_prog(map_fd: i32, verdict: i32) -> Vec<Insn> {
    use reg::*;
    let [ld0, ld1] = Insn::ld_map_fd(R1, map_fd);
    vec![
        Insn::mov64_reg(R6, R1),           // r6 = ctx
        Insn::st_w(R10, -4, 0),            // key = 0 on the stack
        ld0,                               // r1 = map
        ld1,                               //
        Insn::mov64_reg(R2, R10),          // r2 = &key
        Insn::add64_imm(R2, -4),           //
        Insn::call(func::MAP_LOOKUP_ELEM), // r0 = &value or NULL
        Insn::jeq_imm(R0, 0, 6),           // NULL: skip counting
        Insn::mov64_imm(R1, 1),            //
        Insn::atomic_add64(R0, R1, 0),     // packets += 1
        Insn::ldx_w(R2, R6, 4),            // r2 = ctx->data_end
        Insn::ldx_w(R3, R6, 0),            // r3 = ctx->data
        Insn::sub64_reg(R2, R3),           // r2 = frame length
        Insn::atomic_add64(R0, R2, 8),     // bytes += len
        Insn::mov64_imm(R0, verdict),      //
        Insn::exit(),                      //
    ]
}

/// The counting program for tc (tcx ingress): as [`count_prog`], but the context is a
/// `struct __sk_buff`, whose first field is the frame length, and the verdict is a TC action.
pub fn count_prog_tc(map_fd: i32, verdict: i32) -> Vec<Insn> {
    use reg::*;
    let [ld0, ld1] = Insn::ld_map_fd(R1, map_fd);
    vec![
        Insn::mov64_reg(R6, R1),           // r6 = skb
        Insn::st_w(R10, -4, 0),            // key = 0 on the stack
        ld0,                               // r1 = map
        ld1,                               //
        Insn::mov64_reg(R2, R10),          // r2 = &key
        Insn::add64_imm(R2, -4),           //
        Insn::call(func::MAP_LOOKUP_ELEM), // r0 = &value or NULL
        Insn::jeq_imm(R0, 0, 4),           // NULL: skip counting
        Insn::mov64_imm(R1, 1),            //
        Insn::atomic_add64(R0, R1, 0),     // packets += 1
        Insn::ldx_w(R2, R6, 0),            // r2 = skb->len
        Insn::atomic_add64(R0, R2, 8),     // bytes += len
        Insn::mov64_imm(R0, verdict),      //
        Insn::exit(),                      //
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_count_prog_jumps_to_the_verdict() {
        let p = count_prog_tc(5, 2);
        // The NULL check at index 7 skips 4 instructions: to `r0 = verdict` at index 12.
        assert_eq!(p[7].to_bytes()[0], 0x15, "jeq imm");
        assert_eq!(
            i16::from_le_bytes([p[7].to_bytes()[2], p[7].to_bytes()[3]]),
            4
        );
        assert_eq!(p[12].to_bytes(), [0xb7, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[13].to_bytes()[0], 0x95);
    }

    fn bytes(prog: &[Insn]) -> Vec<u8> {
        prog.iter().flat_map(|i| i.to_bytes()).collect()
    }

    #[test]
    fn insn_is_eight_bytes_like_struct_bpf_insn() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::align_of::<Insn>(), 4);
    }

    #[test]
    fn redirect_prog_matches_known_encoding() {
        // As emitted by clang for `return bpf_redirect(7, 0);` (llvm-objdump -d).
        let expect: [u8; 32] = [
            0xb7, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, // r1 = 7
            0xb7, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = 0
            0x85, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, // call 23
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
        ];
        assert_eq!(bytes(&redirect_prog(7)), expect);
    }

    #[test]
    fn individual_encodings() {
        let cases: [(Insn, [u8; 8]); 9] = [
            // r2 = r10
            (Insn::mov64_reg(2, 10), [0xbf, 0xa2, 0, 0, 0, 0, 0, 0]),
            // r2 += -4
            (
                Insn::add64_imm(2, -4),
                [0x07, 0x02, 0, 0, 0xfc, 0xff, 0xff, 0xff],
            ),
            // *(u32 *)(r10 - 4) = 0
            (Insn::st_w(10, -4, 0), [0x62, 0x0a, 0xfc, 0xff, 0, 0, 0, 0]),
            // if r0 == 0 goto +6
            (Insn::jeq_imm(0, 0, 6), [0x15, 0x00, 0x06, 0x00, 0, 0, 0, 0]),
            // lock *(u64 *)(r0 + 8) += r2
            (
                Insn::atomic_add64(0, 2, 8),
                [0xdb, 0x20, 0x08, 0x00, 0, 0, 0, 0],
            ),
            // r2 = *(u32 *)(r6 + 4)
            (Insn::ldx_w(2, 6, 4), [0x61, 0x62, 0x04, 0x00, 0, 0, 0, 0]),
            // r2 -= r3
            (Insn::sub64_reg(2, 3), [0x1f, 0x32, 0, 0, 0, 0, 0, 0]),
            // call bpf_map_lookup_elem
            (Insn::call(1), [0x85, 0, 0, 0, 0x01, 0, 0, 0]),
            // r0 = XDP_DROP
            (
                Insn::mov64_imm(0, xdp_action::XDP_DROP),
                [0xb7, 0x00, 0, 0, 0x01, 0, 0, 0],
            ),
        ];
        for (insn, want) in cases {
            assert_eq!(insn.to_bytes(), want, "{insn:?}");
        }
    }

    #[test]
    fn rewrite_prog_stores_template_and_guards_length() {
        let tpl: Vec<u8> = (1..=7).collect();
        let p = redirect_rewrite_prog(3, &tpl);
        // Bounds check, then one word, one half, one byte, in memory order.
        assert_eq!(p[3], Insn::add64_imm(reg::R4, 7));
        assert_eq!(p[4].to_bytes(), [0x2d, 0x34, 0x07, 0x00, 0, 0, 0, 0]);
        assert_eq!(p[5].to_bytes(), [0x62, 0x02, 0, 0, 1, 2, 3, 4]);
        assert_eq!(p[6].to_bytes(), [0x6a, 0x02, 4, 0, 5, 6, 0, 0]);
        assert_eq!(p[7].to_bytes(), [0x72, 0x02, 6, 0, 7, 0, 0, 0]);
        assert_eq!(&p[8..12], &redirect_prog(3)[..]);
        // The guard jumps exactly to the drop.
        let target = 4 + 1 + p[4].off as usize;
        assert_eq!(p[target], Insn::mov64_imm(reg::R0, xdp_action::XDP_DROP));
        // Long templates: only the first REWRITE_MAX bytes, as 16 word stores.
        let long = vec![0xabu8; 1000];
        let p = redirect_rewrite_prog(3, &long);
        assert_eq!(p.len(), 5 + REWRITE_MAX / 4 + 4 + 2);
    }

    #[test]
    fn thinned_prog_jumps_land_where_intended() {
        let p = thinned_redirect_prog(3, &[0u8; 60], 9, 1000);
        let l = redirect_rewrite_prog(3, &[0u8; 60]).len();
        assert_eq!(p.len(), 14 + l + 3);
        // NULL check lands on the final drop; the credit check on the credit store.
        assert_eq!(7 + 1 + p[7].off as usize, 15 + l);
        assert_eq!(10 + 1 + p[10].off as usize, 14 + l);
        assert_eq!(p[14 + l], Insn::stx_dw(0, 1, 0));
        assert_eq!(
            p[10].to_bytes(),
            [0xa5, 0x01, (3 + l) as u8, 0, 0, 0, 0x10, 0]
        );
        assert_eq!(
            Insn::ldx_dw(1, 0, 0).to_bytes(),
            [0x79, 0x01, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::stx_dw(0, 1, 0).to_bytes(),
            [0x7b, 0x10, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn ld_map_fd_is_two_slots_with_pseudo_src() {
        let [a, b] = Insn::ld_map_fd(1, 5);
        assert_eq!(a.to_bytes(), [0x18, 0x11, 0, 0, 5, 0, 0, 0]);
        assert_eq!(b.to_bytes(), [0; 8]);
    }

    #[test]
    fn count_prog_jump_lands_on_verdict() {
        let p = count_prog(3, xdp_action::XDP_DROP);
        let (idx, j) = p
            .iter()
            .enumerate()
            .find(|(_, i)| i.code == 0x15)
            .expect("has a jeq");
        let target = idx + 1 + j.off as usize;
        assert_eq!(p[target], Insn::mov64_imm(0, xdp_action::XDP_DROP));
        assert_eq!(p.last(), Some(&Insn::exit()));
    }
}
