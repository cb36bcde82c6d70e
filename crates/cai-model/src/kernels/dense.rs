//! Dense f32 matrix products on slices, with strides, through the `gemm` crate (runtime-dispatched
//! AVX-512 / AVX2 / portable micro-kernels): the building block of the kernels that are GEMMs
//! underneath (the chunked output layer, blocked attention).

use gemm::Parallelism;

/// A read-only matrix in a slice: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `[rows, cols]` matrix (`rs = cols`).
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[cols, rows]` matrix, seen as `[rows, cols]`.
    pub fn transposed(data: &'a [f32], rows: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: rows,
        }
    }

    /// A row-major matrix whose rows are `stride` apart.
    pub fn strided(data: &'a [f32], stride: usize) -> Self {
        Mat {
            data,
            rs: stride,
            cs: 1,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] = scale · a[m, k] · b[k, n]`, or `+=` when `accumulate`; `dst` is row-major
/// with rows `dst_rs` apart. Panics when a stride would reach past a slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.fits(m, k) && b.fits(k, n), "gemm: operand out of bounds");
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "gemm: destination out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm reads or writes by the strides given.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_and_transposed_operands_give_the_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * 4).map(|i| i as f32 * 0.5 - 3.0).collect(); // rows 4 apart
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect(); // [n, k]
        let mut dst = vec![1f32; m * 9];
        gemm(
            &mut dst,
            9,
            Mat::strided(&a, 4),
            Mat::transposed(&bt, k),
            m,
            n,
            k,
            0.5,
            true,
            1,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 =
                    1.0 + 0.5 * (0..k).map(|t| a[i * 4 + t] * bt[j * k + t]).sum::<f32>();
                assert!((dst[i * 9 + j] - want).abs() < 1e-5);
            }
            assert_eq!(dst[i * 9 + 8], 1.0, "columns past n are untouched");
        }
    }
}
