/* Native Pippenger multi-exponentiation: the bookkeeping of compute/multiexp.py (digit extraction, bucket
 * loops, window choice) in C, and every multiply a Montgomery product on reused limb buffers (mpn_mul_n or
 * mpn_sqr, then a REDC built from mpn_addmul_1): no Python or gmpy2 object per multiply, and no division.
 * compute/multiexp.py keeps the Python implementation as this module's test oracle.
 *
 * Domain trick: the bases are used as they are, each read as the Montgomery form of b/Rm (Rm = 2^(64n),
 * n limbs of the modulus), so no base is converted. The buckets then compute the Montgomery form of
 * prod (b_i/Rm)^e_i, i.e. Rm^(1-E) * prod b_i^e_i with E = sum e_i, and one powmod by Rm^(E-1) mod p at the
 * end removes the twist. When converting the bases is cheaper (fewer terms than E has bits), they are
 * converted (one Montgomery product by Rm^2 each) and the result leaves by one REDC instead.
 *
 * Inputs are read in place: gmpy2's mpz objects are read through their mpz_t (the layout is checked when
 * the module loads), other numbers are first converted with gmpy2.mpz. Nothing allocated by gmpy2's copy
 * of GMP is ever written or freed here; the result goes back through a Python int.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_WINDOW_LIMIT 24

/* gmpy2's MPZ_Object (gmpy2.h): checked against a known value in module init. */
typedef struct {
    PyObject_HEAD
    __mpz_struct z[1];
    Py_hash_t hash_cache;
} GmpyMPZ;

static PyObject *mpz_type; /* gmpy2.mpz */

static PyObject *as_mpz(PyObject *o) {
    if (Py_TYPE(o) == (PyTypeObject *)mpz_type) {
        Py_INCREF(o);
        return o;
    }
    return PyObject_CallOneArg(mpz_type, o);
}

static inline mpz_srcptr mpz_of(PyObject *o) { return ((GmpyMPZ *)o)->z; }

/* -m^-1 mod 2^64 for odd m (Newton: each step doubles the correct low bits, 1 -> 64 in 6 steps). */
static mp_limb_t neg_inverse(mp_limb_t m) {
    mp_limb_t x = m; /* correct to 3 bits for odd m */
    for (int i = 0; i < 5; i++) x *= 2 - m * x;
    return (mp_limb_t)0 - x;
}

typedef struct {
    const mp_limb_t *m;
    mp_size_t n;
    mp_limb_t minv;
    mp_limb_t *t;        /* 2n limbs of scratch */
    const mp_limb_t *ip; /* m^-1 mod 2^(64n) for GMP's REDC, or NULL for the loop below */
} Mont;

/* GMP's own REDC for large operands (a low half product and a wraparound product: what mpz_powm uses at
 * 4096 bits), 0.5 us of the loop's 2.4 us less a product here. libgmp exports it without declaring it in
 * gmp.h, so it is declared weak (a libgmp without it still loads) and used only when it agreed with the
 * loop on random operands as the module loaded (redc_n_agrees). */
extern void __gmpn_redc_n(mp_ptr, mp_ptr, mp_srcptr, mp_size_t, mp_srcptr) __attribute__((weak));
extern void __gmpn_binvert(mp_ptr, mp_srcptr, mp_size_t, mp_ptr) __attribute__((weak));
extern mp_size_t __gmpn_binvert_itch(mp_size_t) __attribute__((weak));
#define REDC_N_MIN_LIMBS 32 /* below this GMP itself prefers a row-by-row REDC */
static int gmp_redc;         /* set once at load */

/* ip = m^-1 mod 2^(64n) when GMP's REDC serves this size; returns whether it does (else ip is untouched). */
static int mont_inverse(mp_limb_t *ip, const mp_limb_t *m, mp_size_t n) {
    if (!gmp_redc || n < REDC_N_MIN_LIMBS) return 0;
    mp_limb_t *scratch = malloc((size_t)__gmpn_binvert_itch(n) * sizeof(mp_limb_t));
    if (!scratch) return 0;
    __gmpn_binvert(ip, m, n, scratch);
    free(scratch);
    return 1;
}

/* r = t / 2^(64n) mod m for t < m * 2^(64n) + ...: the result is < 2^(64n), not always < m (inputs below
 * 2^(64n) keep it so); t is clobbered. The loop is the classic row-by-row REDC (GMP's mpn_redc_1). */
static void redc(const Mont *M, mp_limb_t *r, mp_limb_t *t) {
    if (M->ip) {
        __gmpn_redc_n(r, t, M->m, M->n, M->ip);
        return;
    }
    const mp_size_t n = M->n;
    mp_limb_t *u = t;
    for (mp_size_t j = 0; j < n; j++) {
        u[0] = mpn_addmul_1(u, M->m, n, u[0] * M->minv);
        u++;
    }
    if (mpn_add_n(r, u, t, n)) mpn_sub_n(r, r, M->m, n);
}

static void mont_mul(const Mont *M, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b) {
    if (a == b)
        mpn_sqr(M->t, a, M->n);
    else
        mpn_mul_n(M->t, a, b, M->n);
    redc(M, r, M->t);
}

/* The window cost model of compute/multiexp.py (_window_costs), same float operations in the same order. */
static double window_cost(const size_t *hist, size_t maxlen, int c) {
    long long digits = 0;
    for (size_t b = 1; b <= maxlen; b++)
        if (hist[b]) digits += (long long)hist[b] * (long long)((b + c - 1) / c);
    long long nwin = (long long)((maxlen + c - 1) / c);
    if (maxlen == 0) nwin = (1 + c - 1) / c; /* max(..., default=1) */
    return (double)digits * (1.0 - ldexp(1.0, -c)) + (double)(nwin * ((1LL << (c + 1)) + c));
}

static int best_window(const size_t *hist, size_t maxlen, int max_window) {
    int best = 2;
    double best_cost = window_cost(hist, maxlen, 2);
    for (int c = 3; c <= max_window; c++) {
        double cost = window_cost(hist, maxlen, c);
        if (cost < best_cost) {
            best = c;
            best_cost = cost;
        }
    }
    return best;
}

/* Bits [shift, shift + c) of e (c <= MAX_WINDOW_LIMIT < 64). */
static inline unsigned long window_digit(mpz_srcptr e, size_t shift, int c) {
    const mp_limb_t *d = e->_mp_d;
    size_t size = (size_t)e->_mp_size, i = shift / 64, off = shift % 64;
    if (i >= size) return 0;
    mp_limb_t v = d[i] >> off;
    if (off + (size_t)c > 64 && i + 1 < size) v |= d[i + 1] << (64 - off);
    return (unsigned long)(v & (((mp_limb_t)1 << c) - 1));
}

typedef struct {
    mpz_srcptr bz;         /* the base as given */
    const mp_limb_t *base; /* n limbs, < 2^(64n): bz's own limbs or a copy */
    mpz_srcptr exp;
    size_t len; /* exponent bit length */
} Term;

static int by_length_desc(const void *a, const void *b) {
    size_t la = ((const Term *)a)->len, lb = ((const Term *)b)->len;
    return (la < lb) - (la > lb);
}

/* Whether a bucket's product is a quadratic residue mod m. Its limbs are the Montgomery form of the
 * product of its bases times a power of Rm = 2^(64n), an even power of 2, so a square: the Jacobi symbol of
 * the limbs as they are is the product of the bases' symbols (docs/batch-verification.md#jacobi-symbols-by-bucket). */
static int bucket_is_residue(const Mont *M, const mp_limb_t *bucket) {
    mpz_t b, m;
    return mpz_jacobi(mpz_roinit_n(b, bucket, M->n), mpz_roinit_n(m, M->m, M->n)) == 1;
}

/* Windows of at least this many bits check their buckets' residues by groups, as compute/multiexp.py
 * (_residues_hold) does: the buckets sharing the digit's high half are a range of the running product's
 * (the symbols of the running product at each multiple of 2^low), and those sharing its low half are
 * multiplied together (about 2^c multiplies), 2^high + 2^low symbols in all instead of 2^c - 1
 * (docs/batch-verification.md#jacobi-symbols-by-bucket). Below it one symbol per bucket is cheaper. */
#define GROUPED_MIN_WINDOW 4

/* The bucket method over terms sorted by length (longest first); result (n limbs) is the Montgomery
 * product of all the digit-weighted terms, in the same domain as the bases. In the lowest
 * residue_windows windows, every bucket's product must also be a quadratic residue (per bucket, or per
 * group of buckets from GROUPED_MIN_WINDOW bits). Returns PIPPENGER_OK, PIPPENGER_NONRESIDUE (a bucket or
 * a group was not; acc is then not set) or PIPPENGER_NOMEM. */
enum { PIPPENGER_NOMEM, PIPPENGER_OK, PIPPENGER_NONRESIDUE };
static int pippenger(const Mont *M, const Term *terms, size_t count, int c, size_t residue_windows,
                     mp_limb_t *acc) {
    const mp_size_t n = M->n;
    const size_t nb = (size_t)1 << c;
    const size_t nwin = (terms[0].len + c - 1) / c;
    mp_limb_t *buckets = malloc(nb * n * sizeof(mp_limb_t));
    unsigned char *used = malloc(nb);
    mp_limb_t *running = malloc(2 * n * sizeof(mp_limb_t));
    const int grouped = residue_windows > 0 && c >= GROUPED_MIN_WINDOW;
    const size_t low_mask = grouped ? ((size_t)1 << (c / 2)) - 1 : 0; /* the digit's low half */
    mp_limb_t *low = grouped ? malloc((low_mask + 1) * n * sizeof(mp_limb_t)) : NULL;
    unsigned char *low_used = grouped ? malloc(low_mask + 1) : NULL;
    if (!buckets || !used || !running || (grouped && (!low || !low_used))) {
        free(buckets);
        free(used);
        free(running);
        free(low);
        free(low_used);
        return PIPPENGER_NOMEM;
    }
    int status = PIPPENGER_OK;
    mp_limb_t *total = running + n;
    int have_acc = 0;
    size_t reach = 0; /* terms with a digit in the current window: a prefix, growing as w falls */
    for (size_t w = nwin; w-- > 0;) {
        const size_t shift = w * (size_t)c;
        if (have_acc)
            for (int s = 0; s < c; s++) mont_mul(M, acc, acc, acc);
        while (reach < count && terms[reach].len > shift) reach++;
        memset(used, 0, nb);
        for (size_t i = 0; i < reach; i++) {
            unsigned long d = window_digit(terms[i].exp, shift, c);
            if (!d) continue;
            mp_limb_t *bucket = buckets + d * n;
            if (used[d])
                mont_mul(M, bucket, bucket, terms[i].base);
            else {
                mpn_copyi(bucket, terms[i].base, n);
                used[d] = 1;
            }
        }
        const int check = w < residue_windows;
        if (check && !grouped)
            for (size_t d = 1; d < nb; d++)
                if (used[d] && !bucket_is_residue(M, buckets + d * n)) {
                    status = PIPPENGER_NONRESIDUE;
                    goto out;
                }
        if (check && grouped) { /* the groups of buckets by the digit's low half */
            memset(low_used, 0, low_mask + 1);
            for (size_t d = 1; d < nb; d++) {
                if (!used[d]) continue;
                mp_limb_t *group = low + (d & low_mask) * n;
                if (low_used[d & low_mask])
                    mont_mul(M, group, group, buckets + d * n);
                else {
                    mpn_copyi(group, buckets + d * n, n);
                    low_used[d & low_mask] = 1;
                }
            }
            for (size_t v = 0; v <= low_mask; v++)
                if (low_used[v] && !bucket_is_residue(M, low + v * n)) {
                    status = PIPPENGER_NONRESIDUE;
                    goto out;
                }
        }
        /* prod_d bucket[d]^d with a running product from the top digit down */
        int have_running = 0, have_total = 0;
        for (size_t d = nb - 1; d > 0; d--) {
            if (used[d]) {
                if (have_running)
                    mont_mul(M, running, running, buckets + d * n);
                else {
                    mpn_copyi(running, buckets + d * n, n);
                    have_running = 1;
                }
            }
            /* the buckets from d up: checked at each multiple of the low half's range and at d = 1, so
             * that every range of buckets sharing a high half is (the quotient of two checked products) */
            if (check && grouped && have_running && (d == 1 || (d & low_mask) == 0) &&
                !bucket_is_residue(M, running)) {
                status = PIPPENGER_NONRESIDUE;
                goto out;
            }
            if (have_running) {
                if (have_total)
                    mont_mul(M, total, total, running);
                else {
                    mpn_copyi(total, running, n);
                    have_total = 1;
                }
            }
        }
        if (have_total) {
            if (have_acc)
                mont_mul(M, acc, acc, total);
            else {
                mpn_copyi(acc, total, n);
                have_acc = 1;
            }
        }
    }
out:
    free(buckets);
    free(used);
    free(running);
    free(low);
    free(low_used);
    /* every term has a non-zero exponent, so some bucket was used and acc is set */
    return status;
}

static PyObject *mpz_to_py(mpz_srcptr v) {
    /* v >= 0: through a Python int to a gmpy2 mpz (gmpy2 owns its own allocator) */
    size_t nbytes = (mpz_sizeinbase(v, 2) + 7) / 8;
    unsigned char *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) return PyErr_NoMemory();
    size_t written = 0;
    mpz_export(buf, &written, -1, 1, 0, 0, v);
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *as_int = PyLong_FromUnsignedNativeBytes(buf, written, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    PyObject *as_int = _PyLong_FromByteArray(buf, written, 1, 0);
#endif
    free(buf);
    if (!as_int) return NULL;
    PyObject *r = PyObject_CallOneArg(mpz_type, as_int);
    Py_DECREF(as_int);
    return r;
}

/* multiexp(bases, exponents, modulus, window, max_window, residue_bits=0) -> mpz, or None when a bucket of
 * a window below bit residue_bits is not a quadratic residue mod modulus */
static PyObject *py_multiexp(PyObject *self, PyObject *args) {
    PyObject *bases_in, *exps_in, *mod_in;
    int window, max_window, residue_bits = 0;
    if (!PyArg_ParseTuple(args, "OOOii|i", &bases_in, &exps_in, &mod_in, &window, &max_window, &residue_bits))
        return NULL;
    if (window < 0 || window > MAX_WINDOW_LIMIT || max_window < 2 || max_window > MAX_WINDOW_LIMIT) {
        PyErr_SetString(PyExc_ValueError, "window out of range");
        return NULL;
    }
    if (residue_bits < 0) {
        PyErr_SetString(PyExc_ValueError, "residue_bits must not be negative");
        return NULL;
    }
    PyObject *bases = PySequence_Fast(bases_in, "bases must be a sequence");
    if (!bases) return NULL;
    PyObject *exps = PySequence_Fast(exps_in, "exponents must be a sequence");
    if (!exps) {
        Py_DECREF(bases);
        return NULL;
    }
    PyObject *result = NULL, *modulus = NULL;
    PyObject **held = NULL; /* the mpz objects read in place: 2 per term */
    Term *terms = NULL;
    mp_limb_t *owned = NULL; /* padded, reduced or converted bases */
    size_t nheld = 0, count = 0, *hist = NULL;
    mpz_t tmp, big_e, r_mod;
    mpz_inits(tmp, big_e, r_mod, NULL);
    Py_ssize_t len = PySequence_Fast_GET_SIZE(bases);
    if (len != PySequence_Fast_GET_SIZE(exps)) {
        PyErr_SetString(PyExc_ValueError, "bases and exponents differ in length");
        goto done;
    }
    modulus = as_mpz(mod_in);
    if (!modulus) goto done;
    mpz_srcptr m = mpz_of(modulus);
    if (mpz_sgn(m) <= 0 || mpz_even_p(m) || mpz_cmp_ui(m, 1) == 0) {
        PyErr_SetString(PyExc_ValueError, "the modulus must be odd and greater than 1");
        goto done;
    }
    held = PyMem_Calloc(2 * (size_t)len + 1, sizeof(PyObject *));
    terms = PyMem_Calloc((size_t)len + 1, sizeof(Term));
    if (!held || !terms) {
        PyErr_NoMemory();
        goto done;
    }
    /* Collect the terms with non-zero exponents, as the Python version does, then refuse negatives. */
    int negative = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *e = as_mpz(PySequence_Fast_GET_ITEM(exps, i));
        if (!e) goto done;
        if (mpz_sgn(mpz_of(e)) == 0) {
            Py_DECREF(e);
            continue;
        }
        held[nheld++] = e;
        PyObject *b = as_mpz(PySequence_Fast_GET_ITEM(bases, i));
        if (!b) goto done;
        held[nheld++] = b;
        if (mpz_sgn(mpz_of(e)) < 0) negative = 1;
        terms[count].exp = mpz_of(e);
        terms[count].bz = mpz_of(b);
        terms[count].len = mpz_sizeinbase(mpz_of(e), 2);
        count++;
    }
    if (count == 0) {
        mpz_set_ui(tmp, 1);
        result = mpz_to_py(tmp);
        goto done;
    }
    if (negative) {
        PyErr_SetString(PyExc_ValueError, "negative exponent");
        goto done;
    }
    if (count == 1) {
        if (residue_bits > 0 && mpz_jacobi(terms[0].bz, m) != 1) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        mpz_powm(tmp, terms[0].bz, terms[0].exp, m);
        result = mpz_to_py(tmp);
        goto done;
    }

    Mont M;
    M.n = (mp_size_t)mpz_size(m);
    M.m = mpz_limbs_read(m);
    M.minv = neg_inverse(M.m[0]);
    M.ip = NULL;
    const mp_size_t n = M.n;
    for (size_t i = 0; i < count; i++) mpz_add(big_e, big_e, terms[i].exp);
    /* convert the bases when that costs fewer products than the final powmod (about 1.2 per bit of E) */
    const int convert = count < mpz_sizeinbase(big_e, 2);
    size_t nowned = 0;
    for (size_t i = 0; i < count; i++) {
        mpz_srcptr b = terms[i].bz;
        if (convert || mpz_sgn(b) < 0 || mpz_size(b) != (size_t)n) nowned++;
    }
    size_t maxlen = 0;
    for (size_t i = 0; i < count; i++)
        if (terms[i].len > maxlen) maxlen = terms[i].len;
    hist = calloc(maxlen + 1, sizeof(size_t));
    owned = malloc((nowned * n + 5 * n) * sizeof(mp_limb_t));
    if (!hist || !owned) {
        PyErr_NoMemory();
        goto done;
    }
    mp_limb_t *acc = owned + nowned * n, *r2 = acc + n;
    M.t = r2 + n; /* 2n limbs */
    if (mont_inverse(M.t + 2 * n, M.m, n)) M.ip = M.t + 2 * n;
    if (convert) { /* Rm^2 mod m */
        mpz_set_ui(tmp, 1);
        mpz_mul_2exp(tmp, tmp, 2 * 64 * (mp_bitcnt_t)n);
        mpz_mod(tmp, tmp, m);
        mpn_zero(r2, n);
        mpn_copyi(r2, mpz_limbs_read(tmp), (mp_size_t)mpz_size(tmp));
    }
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        mpz_srcptr b = terms[i].bz;
        hist[terms[i].len]++;
        if (!convert && mpz_sgn(b) >= 0 && mpz_size(b) == (size_t)n) {
            terms[i].base = b->_mp_d; /* n limbs, so below 2^(64n): fine for REDC as it is */
            continue;
        }
        mp_limb_t *dst = owned + k++ * n;
        mpn_zero(dst, n);
        if (mpz_sgn(b) < 0 || mpz_size(b) > (size_t)n) {
            mpz_mod(tmp, b, m);
            mpn_copyi(dst, mpz_limbs_read(tmp), (mp_size_t)mpz_size(tmp));
        } else
            mpn_copyi(dst, b->_mp_d, (mp_size_t)mpz_size(b));
        if (convert) mont_mul(&M, dst, dst, r2);
        terms[i].base = dst;
    }
    const int c = window ? window : best_window(hist, maxlen, max_window);
    qsort(terms, count, sizeof(Term), by_length_desc);

    int status;
    const size_t residue_windows = ((size_t)residue_bits + (size_t)c - 1) / (size_t)c;
    Py_BEGIN_ALLOW_THREADS;
    status = pippenger(&M, terms, count, c, residue_windows, acc);
    Py_END_ALLOW_THREADS;
    if (status == PIPPENGER_NOMEM) {
        PyErr_NoMemory();
        goto done;
    }
    if (status == PIPPENGER_NONRESIDUE) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    mpz_t view; /* read-only alias of acc's limbs (never cleared) */
    if (convert) { /* leave the Montgomery domain: one REDC of acc */
        mpn_copyi(M.t, acc, n);
        mpn_zero(M.t + n, n);
        redc(&M, acc, M.t);
        mpz_mod(tmp, mpz_roinit_n(view, acc, n), m);
    } else { /* remove the twist: acc * Rm^(E-1) mod m */
        mpz_sub_ui(big_e, big_e, 1);
        mpz_set_ui(r_mod, 1);
        mpz_mul_2exp(r_mod, r_mod, 64 * (mp_bitcnt_t)n);
        mpz_mod(r_mod, r_mod, m);
        mpz_powm(r_mod, r_mod, big_e, m);
        mpz_mul(tmp, r_mod, mpz_roinit_n(view, acc, n));
        mpz_mod(tmp, tmp, m);
    }
    result = mpz_to_py(tmp);

done:
    mpz_clears(tmp, big_e, r_mod, NULL);
    free(hist);
    free(owned);
    for (size_t i = 0; i < nheld; i++) Py_DECREF(held[i]);
    PyMem_Free(held);
    PyMem_Free(terms);
    Py_XDECREF(modulus);
    Py_DECREF(bases);
    Py_DECREF(exps);
    return result;
}

/* choose_window(bit_lengths, max_window) -> int: the C cost model, for the tests against the Python one */
static PyObject *py_choose_window(PyObject *self, PyObject *args) {
    PyObject *lens_in;
    int max_window;
    if (!PyArg_ParseTuple(args, "Oi", &lens_in, &max_window)) return NULL;
    if (max_window < 2 || max_window > MAX_WINDOW_LIMIT) {
        PyErr_SetString(PyExc_ValueError, "window out of range");
        return NULL;
    }
    PyObject *lens = PySequence_Fast(lens_in, "bit lengths must be a sequence");
    if (!lens) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(lens);
    size_t maxlen = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        size_t b = PyLong_AsSize_t(PySequence_Fast_GET_ITEM(lens, i));
        if (b == (size_t)-1 && PyErr_Occurred()) {
            Py_DECREF(lens);
            return NULL;
        }
        if (b > maxlen) maxlen = b;
    }
    size_t *hist = calloc(maxlen + 1, sizeof(size_t));
    if (!hist) {
        Py_DECREF(lens);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < len; i++) hist[PyLong_AsSize_t(PySequence_Fast_GET_ITEM(lens, i))]++;
    hist[0] = 0; /* zero-length exponents add no digits, as in the Python model */
    int c = best_window(hist, maxlen, max_window);
    free(hist);
    Py_DECREF(lens);
    return PyLong_FromLong(c);
}

/* Fixed-base exponentiation (compute/fixedbase.py): the table of base^(d * 2^(w*i)) for every window i of
 * the exponent and every digit d < 2^w, kept in Montgomery form (times Rm = 2^(64n) mod m) in one buffer
 * owned by a capsule, so that base^e is one Montgomery product per non-zero digit and one REDC at the end:
 * no Python or gmpy2 object per multiply. The last row holds only the digits the top window can have
 * (exponent_bits need not be a multiple of w), which is what keeps 13-bit windows under 100 MiB for 256 bits.
 * compute/fixedbase.py keeps the Python table as this one's test oracle. */
#define FIXEDBASE_CAPSULE "compute._multiexp.FixedBase"
#define FIXEDBASE_MAX_WINDOW 20

typedef struct {
    mp_limb_t *mod;   /* n limbs: a copy of the modulus */
    mp_limb_t *ip;    /* n limbs: its inverse for GMP's REDC, or NULL */
    mp_limb_t *table; /* row i, digit d at ((i << w) + d) * n */
    mp_size_t n;
    mp_limb_t minv;
    int window;
    size_t nwin, bits, nbytes;
} FixedBase;

/* A table's buffer, on transparent huge pages where the kernel gives them on request (THP "madvise"):
 * exponentiations read entries all over 76 MiB, and fewer TLB misses made encryption about 2% faster
 * here. 2 MiB-aligned, so that the whole table can be huge pages; plain memory where that is refused. */
#define HUGE_PAGE ((size_t)2 << 20)
static void *table_alloc(size_t nbytes) {
    void *p = NULL;
    if (nbytes < HUGE_PAGE || posix_memalign(&p, HUGE_PAGE, nbytes) != 0) return malloc(nbytes);
#ifdef MADV_HUGEPAGE
    madvise(p, nbytes, MADV_HUGEPAGE); /* advice only: the table works the same without it */
#endif
    return p;
}

static void fixedbase_release(FixedBase *fb) {
    free(fb->mod);
    free(fb->ip);
    free(fb->table);
    free(fb);
}

static void fixedbase_free(PyObject *capsule) {
    FixedBase *fb = PyCapsule_GetPointer(capsule, FIXEDBASE_CAPSULE);
    if (fb) fixedbase_release(fb);
}

static size_t fixedbase_row_size(const FixedBase *fb, size_t i) {
    if (i + 1 < fb->nwin) return (size_t)1 << fb->window;
    return (size_t)1 << (fb->bits - i * (size_t)fb->window); /* the top window: only its possible digits */
}

/* Fills the table from x (base mod m, n limbs, < m) and one (Rm mod m); scratch is 3n limbs. */
static void fixedbase_build(FixedBase *fb, const mp_limb_t *x, const mp_limb_t *r2, const mp_limb_t *one,
                            mp_limb_t *scratch) {
    const mp_size_t n = fb->n;
    Mont M = {fb->mod, n, fb->minv, scratch, fb->ip};
    const size_t full = (size_t)1 << fb->window;
    mp_limb_t *unit = fb->table + n; /* row 0, digit 1 */
    mont_mul(&M, unit, x, r2);
    for (size_t i = 0; i < fb->nwin; i++) {
        mp_limb_t *row = fb->table + (i << fb->window) * (size_t)n;
        const size_t size = fixedbase_row_size(fb, i);
        mpn_copyi(row, one, n);
        for (size_t d = 2; d < size; d++) mont_mul(&M, row + d * n, row + (d - 1) * n, row + n);
        /* the next row's unit is base^(2^(w*(i+1))) = (this row's last digit) * (this row's unit) */
        if (i + 1 < fb->nwin) mont_mul(&M, row + (full + 1) * n, row + (full - 1) * n, row + n);
    }
}

/* fixedbase_table(base, modulus, window, exponent_bits) -> capsule */
static PyObject *py_fixedbase_table(PyObject *self, PyObject *args) {
    PyObject *base_in, *mod_in;
    int window;
    Py_ssize_t bits;
    if (!PyArg_ParseTuple(args, "OOin", &base_in, &mod_in, &window, &bits)) return NULL;
    if (window < 1 || window > FIXEDBASE_MAX_WINDOW || bits < 1 || bits > 1 << 16) {
        PyErr_SetString(PyExc_ValueError, "window or exponent_bits out of range");
        return NULL;
    }
    PyObject *base = as_mpz(base_in);
    if (!base) return NULL;
    PyObject *modulus = as_mpz(mod_in);
    if (!modulus) {
        Py_DECREF(base);
        return NULL;
    }
    PyObject *result = NULL;
    FixedBase *fb = NULL;
    mp_limb_t *work = NULL;
    mpz_t tmp;
    mpz_init(tmp);
    mpz_srcptr m = mpz_of(modulus);
    if (mpz_sgn(m) <= 0 || mpz_even_p(m) || mpz_cmp_ui(m, 1) == 0) {
        PyErr_SetString(PyExc_ValueError, "the modulus must be odd and greater than 1");
        goto done;
    }
    const mp_size_t n = (mp_size_t)mpz_size(m);
    fb = calloc(1, sizeof(FixedBase));
    if (!fb) {
        PyErr_NoMemory();
        goto done;
    }
    fb->n = n;
    fb->window = window;
    fb->bits = (size_t)bits;
    fb->nwin = ((size_t)bits + (size_t)window - 1) / (size_t)window;
    size_t entries = ((fb->nwin - 1) << window) + fixedbase_row_size(fb, fb->nwin - 1);
    fb->nbytes = entries * (size_t)n * sizeof(mp_limb_t);
    fb->mod = malloc((size_t)n * sizeof(mp_limb_t));
    fb->table = table_alloc(fb->nbytes);
    work = malloc(6 * (size_t)n * sizeof(mp_limb_t)); /* x, r2, one, 3n scratch */
    if (!fb->mod || !fb->table || !work) {
        PyErr_NoMemory();
        goto done;
    }
    mpn_copyi(fb->mod, mpz_limbs_read(m), n);
    fb->minv = neg_inverse(fb->mod[0]);
    fb->ip = malloc((size_t)n * sizeof(mp_limb_t));
    if (fb->ip && !mont_inverse(fb->ip, fb->mod, n)) {
        free(fb->ip);
        fb->ip = NULL;
    }
    mp_limb_t *x = work, *r2 = work + n, *one = work + 2 * n;
    mpn_zero(work, 3 * n);
    mpz_mod(tmp, mpz_of(base), m);
    mpn_copyi(x, mpz_limbs_read(tmp), (mp_size_t)mpz_size(tmp));
    mpz_set_ui(tmp, 1);
    mpz_mul_2exp(tmp, tmp, 2 * 64 * (mp_bitcnt_t)n);
    mpz_mod(tmp, tmp, m);
    mpn_copyi(r2, mpz_limbs_read(tmp), (mp_size_t)mpz_size(tmp));
    mpz_set_ui(tmp, 1);
    mpz_mul_2exp(tmp, tmp, 64 * (mp_bitcnt_t)n);
    mpz_mod(tmp, tmp, m);
    mpn_copyi(one, mpz_limbs_read(tmp), (mp_size_t)mpz_size(tmp));
    Py_BEGIN_ALLOW_THREADS;
    fixedbase_build(fb, x, r2, one, work + 3 * n);
    Py_END_ALLOW_THREADS;
    result = PyCapsule_New(fb, FIXEDBASE_CAPSULE, fixedbase_free);
    if (result) fb = NULL; /* the capsule owns it now */

done:
    if (fb) fixedbase_release(fb); /* calloc'd: fields not yet allocated are NULL */
    free(work);
    mpz_clear(tmp);
    Py_DECREF(base);
    Py_DECREF(modulus);
    return result;
}

/* fixedbase_pow(table, e) -> mpz: base^e mod m for 0 <= e < 2^exponent_bits (ValueError otherwise) */
static PyObject *py_fixedbase_pow(PyObject *self, PyObject *args) {
    PyObject *capsule, *e_in;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &e_in)) return NULL;
    const FixedBase *fb = PyCapsule_GetPointer(capsule, FIXEDBASE_CAPSULE);
    if (!fb) return NULL;
    PyObject *e_obj = as_mpz(e_in);
    if (!e_obj) return NULL;
    mpz_srcptr e = mpz_of(e_obj);
    PyObject *result = NULL;
    mpz_t tmp;
    mpz_init(tmp);
    if (mpz_sgn(e) < 0 || (mpz_sgn(e) > 0 && mpz_sizeinbase(e, 2) > fb->bits)) {
        PyErr_SetString(PyExc_ValueError, "exponent outside the table's range");
        goto done;
    }
    const mp_size_t n = fb->n;
    mp_limb_t *work = malloc(4 * (size_t)n * sizeof(mp_limb_t)); /* acc, 2n scratch, out */
    const mp_limb_t **entries = malloc(fb->nwin * sizeof(mp_limb_t *));
    if (!work || !entries) {
        free(work);
        free(entries);
        PyErr_NoMemory();
        goto done;
    }
    mp_limb_t *acc = work, *out = work + 3 * n;
    Mont M = {fb->mod, n, fb->minv, work + n, fb->ip};
    size_t k = 0;
    const size_t len = mpz_sgn(e) ? mpz_sizeinbase(e, 2) : 0;
    const int have = len > 0;
    Py_BEGIN_ALLOW_THREADS;
    for (size_t i = 0, shift = 0; shift < len; i++, shift += (size_t)fb->window) {
        unsigned long d = window_digit(e, shift, fb->window);
        if (d) entries[k++] = fb->table + ((i << fb->window) + d) * (size_t)n;
    }
    /* Wide tables do not fit in the cache: fetch the next entry while this product runs. */
    for (size_t j = 0; j < k; j++) {
        if (j + 1 < k)
            for (size_t off = 0; off < (size_t)n * sizeof(mp_limb_t); off += 64)
                __builtin_prefetch((const char *)entries[j + 1] + off);
        if (j)
            mont_mul(&M, acc, acc, entries[j]);
        else
            mpn_copyi(acc, entries[0], n);
    }
    if (have) { /* leave the Montgomery domain: one REDC */
        mpn_copyi(M.t, acc, n);
        mpn_zero(M.t + n, n);
        redc(&M, out, M.t);
    }
    Py_END_ALLOW_THREADS;
    if (have) {
        mpz_t view, mod_view; /* read-only aliases (never cleared) */
        mpz_mod(tmp, mpz_roinit_n(view, out, n), mpz_roinit_n(mod_view, fb->mod, n));
    } else
        mpz_set_ui(tmp, 1);
    free(work);
    free(entries);
    result = mpz_to_py(tmp);

done:
    mpz_clear(tmp);
    Py_DECREF(e_obj);
    return result;
}

/* redc() -> str: which REDC serves 4096-bit moduli ("gmp" or "loop"), for the tests and the benchmarks */
static PyObject *py_redc(PyObject *self, PyObject *unused) { return PyUnicode_FromString(gmp_redc ? "gmp" : "loop"); }

/* Whether GMP's REDC gives the loop's results (mod m) on random odd moduli of the sizes it would serve. */
static int redc_n_agrees(void) {
    if (!__gmpn_redc_n || !__gmpn_binvert || !__gmpn_binvert_itch) return 0;
    gmp_redc = 1;
    int ok = 1;
    gmp_randstate_t rs;
    gmp_randinit_default(rs);
    gmp_randseed_ui(rs, 20261205);
    mpz_t m, a, b, x, y;
    mpz_inits(m, a, b, x, y, NULL);
    for (mp_size_t n = REDC_N_MIN_LIMBS; ok && n <= 4 * REDC_N_MIN_LIMBS; n += 16) {
        for (int round = 0; ok && round < 8; round++) {
            mpz_urandomb(m, rs, 64 * (mp_bitcnt_t)n);
            mpz_setbit(m, 64 * (mp_bitcnt_t)n - 1 - (mp_bitcnt_t)round); /* full-size and shorter tops */
            mpz_setbit(m, 0);
            if (mpz_size(m) != (size_t)n) continue;
            mpz_urandomb(a, rs, 64 * (mp_bitcnt_t)n); /* below 2^(64n), not always below m: as in use */
            mpz_urandomb(b, rs, 64 * (mp_bitcnt_t)n);
            mp_limb_t *buf = calloc(8 * (size_t)n, sizeof(mp_limb_t));
            if (!buf) {
                ok = 0;
                break;
            }
            mp_limb_t *pa = buf, *pb = buf + n, *r1 = buf + 2 * n, *r2 = buf + 3 * n, *ip = buf + 4 * n;
            mp_limb_t *t = buf + 5 * n; /* 2n, then n spare */
            mpn_copyi(pa, mpz_limbs_read(a), (mp_size_t)mpz_size(a));
            mpn_copyi(pb, mpz_limbs_read(b), (mp_size_t)mpz_size(b));
            Mont M = {mpz_limbs_read(m), n, neg_inverse(mpz_limbs_read(m)[0]), t, NULL};
            mont_mul(&M, r1, pa, pb);
            if (!mont_inverse(ip, M.m, n)) ok = 0;
            M.ip = ip;
            mont_mul(&M, r2, pa, pb);
            mpz_t v1, v2;
            mpz_mod(x, mpz_roinit_n(v1, r1, n), m);
            mpz_mod(y, mpz_roinit_n(v2, r2, n), m);
            if (mpz_cmp(x, y) != 0) ok = 0;
            free(buf);
        }
    }
    mpz_clears(m, a, b, x, y, NULL);
    gmp_randclear(rs);
    gmp_redc = ok;
    return ok;
}

/* fixedbase_nbytes(table) -> int: the bytes the table's entries take */
static PyObject *py_fixedbase_nbytes(PyObject *self, PyObject *capsule) {
    const FixedBase *fb = PyCapsule_GetPointer(capsule, FIXEDBASE_CAPSULE);
    if (!fb) return NULL;
    return PyLong_FromSize_t(fb->nbytes);
}

static PyMethodDef methods[] = {
    {"multiexp", py_multiexp, METH_VARARGS,
     "multiexp(bases, exponents, modulus, window, max_window, residue_bits=0) -> mpz or None: prod b^e mod "
     "modulus (odd modulus; window 0 chooses it by the cost model); None when a bucket of a window below "
     "residue_bits is not a quadratic residue."},
    {"choose_window", py_choose_window, METH_VARARGS,
     "choose_window(bit_lengths, max_window) -> int: the window the cost model picks."},
    {"fixedbase_table", py_fixedbase_table, METH_VARARGS,
     "fixedbase_table(base, modulus, window, exponent_bits) -> capsule: the fixed-base table of base."},
    {"fixedbase_pow", py_fixedbase_pow, METH_VARARGS,
     "fixedbase_pow(table, e) -> mpz: base^e mod modulus for 0 <= e < 2^exponent_bits."},
    {"fixedbase_nbytes", py_fixedbase_nbytes, METH_O, "fixedbase_nbytes(table) -> int: the table's size."},
    {"redc", py_redc, METH_NOARGS, "redc() -> str: 'gmp' when GMP's REDC serves large moduli, else 'loop'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_multiexp", NULL, -1, methods};

/* The module reads gmpy2's mpz in place: refuse to load if its layout is not the one declared above. */
static int layout_ok(void) {
    PyObject *big = PyLong_FromString("123456789abcdef0fedcba9876543210f", NULL, 16);
    if (!big) return 0;
    PyObject *z = PyObject_CallOneArg(mpz_type, big);
    Py_DECREF(big);
    if (!z) return 0;
    mpz_srcptr v = mpz_of(z);
    int ok = Py_TYPE(z) == (PyTypeObject *)mpz_type &&
             ((PyTypeObject *)mpz_type)->tp_basicsize >= (Py_ssize_t)sizeof(GmpyMPZ) && v->_mp_size == 3 &&
             v->_mp_alloc >= 3 && v->_mp_d[0] == (mp_limb_t)0xedcba9876543210fULL &&
             v->_mp_d[1] == (mp_limb_t)0x23456789abcdef0fULL && v->_mp_d[2] == 1;
    Py_DECREF(z);
    if (!ok) PyErr_SetString(PyExc_ImportError, "gmpy2.mpz does not have the expected layout");
    return ok;
}

PyMODINIT_FUNC PyInit__multiexp(void) {
    if (sizeof(mp_limb_t) != 8) {
        PyErr_SetString(PyExc_ImportError, "_multiexp needs 64-bit GMP limbs");
        return NULL;
    }
    PyObject *gmpy2 = PyImport_ImportModule("gmpy2");
    if (!gmpy2) return NULL;
    mpz_type = PyObject_GetAttrString(gmpy2, "mpz");
    Py_DECREF(gmpy2);
    if (!mpz_type) return NULL;
    if (!PyType_Check(mpz_type) || !layout_ok()) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ImportError, "gmpy2.mpz is not a type");
        Py_CLEAR(mpz_type);
        return NULL;
    }
    redc_n_agrees();
    return PyModule_Create(&module);
}
