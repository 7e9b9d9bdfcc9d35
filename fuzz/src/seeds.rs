//! The seed corpus: small inputs per target that reach every decoder state worth starting
//! from (valid streams, each kind of corruption, boundary lengths). `gen-corpus` writes them
//! to `fuzz/corpus/<target>/`, where they are checked in.

use crate::plan::{self, Comp, Encoder, Side, LIMIT};

fn req(id: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    plan::request(&mut v, id, name, value);
    v
}

fn resp(id: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    plan::response(&mut v, id, value);
    v
}

fn flate(batches: &[&[u8]]) -> Vec<u8> {
    let mut e = Encoder::new(Comp::Flate);
    let mut out = Vec::new();
    for b in batches {
        e.flush(b, false, &mut out);
    }
    out
}

fn snappy(batches: &[&[u8]], stored: bool) -> Vec<u8> {
    let mut e = Encoder::new(Comp::Snappy);
    let mut out = Vec::new();
    for b in batches {
        e.flush(b, stored, &mut out);
    }
    out
}

fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Request streams shared by the raw server targets (as plain bytes).
fn plain_requests() -> Vec<(&'static str, Vec<u8>)> {
    let one = req(1, b"foo", b"bar");
    let mut v = vec![
        ("empty", Vec::new()),
        ("one", one.clone()),
        ("nowait", req(0, b"log", b"fire and forget")),
        (
            "mixed",
            cat(&[
                &req(1, b"echo", b"a"),
                &req(0, b"nowait", b""),
                &req(2, b"defer", b"later"),
                &req(3, b"xdrop", b"unanswered"),
                &req(2, b"dup-id", b"same id again"),
                &req(u32::MAX, b"", b""),
            ]),
        ),
        ("empty-name-value", req(9, b"", b"")),
        // Fire-and-forget requests answered after the client's FIN: the connection must
        // still close (a late nowait answer must wake the writer).
        ("nowait-late-answer", req(0, b"wait", b"late")),
        (
            "nowait-late-drop",
            cat(&[&req(0, b"wait", b"late"), &req(0, b"xdrop", b"")]),
        ),
        ("late-answer", req(1, b"wait", b"late")),
        (
            "name-too-long",
            cat(&[&7u32.to_le_bytes(), &((LIMIT + 1) as u32).to_le_bytes()]),
        ),
        (
            "value-4gib",
            cat(&[
                &7u32.to_le_bytes(),
                &1u32.to_le_bytes(),
                b"n",
                &u32::MAX.to_le_bytes(),
            ]),
        ),
        (
            "value-limit-head",
            cat(&[
                &7u32.to_le_bytes(),
                &1u32.to_le_bytes(),
                b"n",
                &(LIMIT as u32).to_le_bytes(),
            ]),
        ),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    // A good frame, then the next one cut at each field boundary.
    let second = req(5, b"name", b"value");
    for (what, cut) in [
        ("cut-in-id", 2),
        ("cut-after-id", 4),
        ("cut-in-name-len", 6),
        ("cut-after-name-len", 8),
        ("cut-in-name", 10),
        ("cut-after-name", 12),
        ("cut-in-value-len", 14),
        ("cut-after-value-len", 16),
        ("cut-in-value", 19),
    ] {
        v.push((what, cat(&[&one, &second[..cut]])));
    }
    v
}

/// Every seed: (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |t: &'static str, n: &str, b: Vec<u8>| out.push((t, n.to_string(), b));

    // server_none: the plain request streams.
    let plain = plain_requests();
    for (n, b) in &plain {
        add("server_none", n, b.clone());
    }

    // server_flate: the same streams deflated, and broken deflate.
    let two = cat(&[&req(1, b"a", b"1"), &req(2, b"b", b"22")]);
    for (n, b) in &plain {
        add("server_flate", n, flate(&[b]));
    }
    add(
        "server_flate",
        "two-batches",
        flate(&[&req(1, b"first", b"x"), &req(2, b"second", b"y")]),
    );
    add(
        "server_flate",
        "frame-across-batches",
        flate(&[&two[..7], &two[7..]]),
    );
    add("server_flate", "final-block", vec![0x03, 0x00]);
    add("server_flate", "reserved-block-type", vec![0xff; 8]);
    add(
        "server_flate",
        "stored-bad-nlen",
        vec![0x00, 0x05, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5],
    );
    let mut spliced = flate(&[&two]);
    let n = spliced.len();
    spliced.truncate(n / 2);
    spliced.extend_from_slice(&[0xff; 16]);
    add("server_flate", "spliced", spliced);
    let t = flate(&[&two]);
    add("server_flate", "truncated", t[..t.len() - 5].to_vec());
    // A bomb within the limit: a 1 MiB value of zeros in about a kilobyte.
    add(
        "server_flate",
        "bomb-limit-value",
        flate(&[&req(1, b"bomb", &vec![0u8; LIMIT - 5])]),
    );

    // server_snappy: valid streams, then every chunk-level fault.
    for (n, b) in &plain {
        add("server_snappy", n, snappy(&[b], false));
    }
    add("server_snappy", "stored-chunks", snappy(&[&two], true));
    add(
        "server_snappy",
        "two-batches",
        snappy(&[&req(1, b"a", b"1"), &req(2, b"b", b"2")], false),
    );
    let mut bad_crc = snappy(&[&req(1, b"foo", b"bar")], true);
    let l = bad_crc.len();
    bad_crc[l - 1] ^= 0x40;
    add("server_snappy", "bad-checksum", bad_crc);
    add(
        "server_snappy",
        "unknown-chunk-0x05",
        cat(&[&plan::SNAPPY_ID, &chunk(0x05, b"abc")]),
    );
    add(
        "server_snappy",
        "skippable-chunk",
        cat(&[
            &plan::SNAPPY_ID,
            &chunk(0xfe, &[0; 100]),
            &snappy(&[&req(1, b"s", b"k")], false)[10..],
        ]),
    );
    add(
        "server_snappy",
        "no-identifier",
        snappy(&[&req(1, b"foo", b"bar")], true)[10..].to_vec(),
    );
    add("server_snappy", "bad-identifier", chunk(0xff, b"sNaPpX"));
    add(
        "server_snappy",
        "chunk-too-large",
        cat(&[&plan::SNAPPY_ID, &[0x01, 0x06, 0x00, 0x01], &[0; 8]]),
    );
    add(
        "server_snappy",
        "chunk-shorter-than-crc",
        cat(&[&plan::SNAPPY_ID, &chunk(0x00, b"ab")]),
    );
    add(
        "server_snappy",
        "corrupt-compressed",
        cat(&[
            &plan::SNAPPY_ID,
            &chunk(0x00, &[0, 0, 0, 0, 10, 0x01, 0x00]),
        ]),
    );
    let big = vec![7u8; 100_000];
    add(
        "server_snappy",
        "two-chunks",
        snappy(&[&req(1, b"big", &big)], false),
    );

    // stream_none / stream_flate / stream_snappy: plans.
    for t in ["stream_none", "stream_flate", "stream_snappy"] {
        let s = Side::Requests;
        let mut p = Vec::new();
        plan::op_frame(&mut p, s, 1, b"foo", b"bar");
        plan::op_frame(&mut p, s, 0, b"log", b"nowait");
        plan::op_flush(&mut p, false);
        plan::op_frame(&mut p, s, 2, b"defer", b"later");
        plan::op_split(&mut p);
        plan::op_frame(&mut p, s, 3, b"xdrop", b"");
        add(t, "batches-and-splits", p.clone());
        let mut q = p.clone();
        plan::op_corrupt(&mut q, 20, 0x55);
        add(t, "corrupt", q);
        let mut q = p.clone();
        plan::op_raw(&mut q, &[0xff; 12]);
        plan::op_frame(&mut q, s, 4, b"after", b"raw");
        add(t, "raw-garbage", q);
        let mut q = Vec::new();
        for (i, which) in [5u8, 6, 7].iter().enumerate() {
            plan::op_boundary(&mut q, s, 10 + i as u8, b"b", *which, b'z');
            plan::op_split(&mut q);
        }
        add(t, "around-64k", q);
        let mut q = Vec::new();
        plan::op_boundary(&mut q, s, 1, b"", 3, 0);
        plan::op_flush(&mut q, true);
        add(t, "value-at-limit", q);
        let mut q = Vec::new();
        plan::op_boundary(&mut q, s, 1, b"", 4, 0);
        add(t, "value-over-limit", q);
        let mut q = Vec::new();
        plan::op_big_request(&mut q, 1, 3, 3, b'a');
        add(t, "name-and-value-at-limit", q.clone());
        // The same frame, its last 12 KiB in a second write.
        plan::op_split_back(&mut q, 3);
        add(t, "name-and-value-at-limit-split", q);
        let mut q = Vec::new();
        plan::op_boundary(&mut q, s, 1, b"", 3, b'v');
        plan::op_split_back(&mut q, 2);
        add(t, "value-at-limit-split", q);
        let mut q = Vec::new();
        plan::op_run(&mut q, s, 1, b"run", 0xffff, 3, b'r');
        plan::op_split(&mut q);
        plan::op_run(&mut q, s, 2, b"run2", 1000, 0, b'q');
        add(t, "runs", q);
        let mut q = Vec::new();
        plan::op_u32(&mut q, 1);
        plan::op_len(&mut q, 4);
        add(t, "torn-length", q);
        let mut q = Vec::new();
        plan::op_u32(&mut q, 1);
        plan::op_len(&mut q, 7);
        add(t, "length-4gib", q);
    }

    // client: selector byte, then raw bytes or a plan of response frames.
    let sel = |comp: u8, encoded: bool, calls: u8| comp | (encoded as u8) << 2 | (calls - 1) << 3;
    add(
        "client",
        "raw-answers",
        cat(&[&[sel(1, false, 2)], &resp(1, b"one"), &resp(2, b"two")]),
    );
    add(
        "client",
        "raw-unknown-and-duplicate",
        cat(&[
            &[sel(1, false, 2)],
            &resp(9, b"nobody"),
            &resp(1, b"one"),
            &resp(1, b"again"),
            &resp(0, b"zero"),
            &resp(2, b"two"),
        ]),
    );
    add(
        "client",
        "raw-too-large",
        cat(&[
            &[sel(1, false, 1)],
            &1u32.to_le_bytes(),
            &((LIMIT + 1) as u32).to_le_bytes(),
        ]),
    );
    add(
        "client",
        "raw-4gib",
        cat(&[
            &[sel(1, false, 1)],
            &1u32.to_le_bytes(),
            &u32::MAX.to_le_bytes(),
        ]),
    );
    add(
        "client",
        "raw-truncated",
        cat(&[&[sel(1, false, 1)], &resp(1, b"cut")[..9]]),
    );
    add(
        "client",
        "raw-garbage",
        cat(&[&[sel(0, false, 3)], b"garbage garbage"]),
    );
    add(
        "client",
        "raw-snappy-garbage",
        cat(&[&[sel(2, false, 3)], b"garbage garbage"]),
    );
    for (comp, name) in [(0u8, "flate"), (1, "none"), (2, "snappy")] {
        let s = Side::Responses;
        let mut p = vec![sel(comp, true, 4)];
        plan::op_frame(&mut p, s, 3, b"", b"three");
        plan::op_flush(&mut p, false);
        plan::op_frame(&mut p, s, 1, b"", b"one");
        plan::op_split(&mut p);
        plan::op_frame(&mut p, s, 7, b"", b"stray");
        plan::op_frame(&mut p, s, 2, b"", b"two");
        plan::op_frame(&mut p, s, 4, b"", b"four");
        add("client", &format!("plan-{name}"), p);
        let mut p = vec![sel(comp, true, 3)];
        plan::op_boundary(&mut p, s, 1, b"", 5, b'a');
        plan::op_boundary(&mut p, s, 2, b"", 6, b'b');
        plan::op_split(&mut p);
        plan::op_boundary(&mut p, s, 3, b"", 7, b'c');
        add("client", &format!("plan-{name}-64k"), p);
        let mut p = vec![sel(comp, true, 1)];
        plan::op_boundary(&mut p, s, 1, b"", 3, b'L');
        add("client", &format!("plan-{name}-limit"), p.clone());
        plan::op_split_back(&mut p, 2);
        add("client", &format!("plan-{name}-limit-split"), p);
        let mut p = vec![sel(comp, true, 2)];
        plan::op_frame(&mut p, s, 1, b"", b"ok");
        plan::op_boundary(&mut p, s, 2, b"", 4, b'L');
        add("client", &format!("plan-{name}-over-limit"), p);
        let mut p = vec![sel(comp, true, 2)];
        plan::op_frame(&mut p, s, 1, b"", b"ok");
        plan::op_flush(&mut p, false);
        plan::op_corrupt(&mut p, 3, 0x21);
        plan::op_frame(&mut p, s, 2, b"", b"corrupted?");
        add("client", &format!("plan-{name}-corrupt"), p);
    }

    // handshake: selector (0 to a server, 1 to a client), then the header bytes.
    let good = |code: u8, tls: u8| vec![b'f', b'z', 5, code, tls];
    for side in [0u8, 1] {
        let who = if side == 0 { "to-server" } else { "to-client" };
        add(
            "handshake",
            &format!("{who}-valid"),
            cat(&[&[side], &good(1, 0)]),
        );
        add(
            "handshake",
            &format!("{who}-valid-then-frames"),
            cat(&[
                &[side],
                &good(1, 0),
                &if side == 0 {
                    req(1, b"hs", b"ok")
                } else {
                    resp(1, b"hs:ok")
                },
            ]),
        );
        add(
            "handshake",
            &format!("{who}-bad-sniff"),
            cat(&[&[side], b"fZ", &[5, 1, 0]]),
        );
        add(
            "handshake",
            &format!("{who}-bad-version"),
            cat(&[&[side], &good(1, 0)[..2], &[6, 1, 0]]),
        );
        add(
            "handshake",
            &format!("{who}-code-3"),
            cat(&[&[side], &good(3, 0)]),
        );
        add(
            "handshake",
            &format!("{who}-code-255"),
            cat(&[&[side], &good(255, 0)]),
        );
        add(
            "handshake",
            &format!("{who}-tls"),
            cat(&[&[side], &good(1, 1)]),
        );
        add(
            "handshake",
            &format!("{who}-short"),
            cat(&[&[side], b"fz", &[5]]),
        );
        add("handshake", &format!("{who}-empty"), vec![side]);
        add(
            "handshake",
            &format!("{who}-http"),
            cat(&[&[side], b"HTTP/1.1 400 Bad Request\r\n\r\n"]),
        );
    }
    out
}
