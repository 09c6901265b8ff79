//! Runs every 1×1 convolution of a model once with its packed kernel and once with the gemm
//! crate (`Model::time_pointwise_layers`), and call `SEL` (`2 L` is layer `L`'s packed kernel,
//! `2 L + 1` its gemm-crate path) `EXTRA` more times: under an instruction-counting emulator,
//! the difference from a run with `SEL = -1` is what `EXTRA` runs of that call execute
//! (`scripts/count_pointwise_insns.sh`). With `SEL = -1` it lists the calls.
//!
//!     cargo run --release --example pointwise_calls -- MODEL.safetensors SEL EXTRA

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: pointwise_calls MODEL.safetensors SEL EXTRA");
        std::process::exit(2);
    }
    let model = match repghost_runtime::Model::load(args[1].as_ref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let (Ok(sel), Ok(extra)) = (args[2].parse::<isize>(), args[3].parse::<usize>()) else {
        eprintln!("error: SEL is an integer, EXTRA a count");
        std::process::exit(2);
    };
    let mut call = 0isize;
    let layers = model.time_pointwise_layers(224, |f| {
        f();
        if call == sel {
            (0..extra).for_each(|_| f());
        }
        call += 1;
    });
    if sel < 0 {
        for (i, l) in layers.iter().enumerate() {
            println!("{} {} m {} k {} n {}", 2 * i, l.name, l.m, l.k, l.n);
        }
    }
}
