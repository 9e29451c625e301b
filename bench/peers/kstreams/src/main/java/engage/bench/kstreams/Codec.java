package engage.bench.kstreams;

import java.nio.charset.StandardCharsets;
import java.time.LocalDate;

/**
 * Avro binary for the fixed schemas of this job (schemas/user_action.avsc in,
 * schemas/session.avsc and schemas/daily_metrics.avsc out), with Confluent
 * framing (magic byte 0, 4-byte big-endian schema id).
 *
 * With a schema registry the usual choice would be Confluent's
 * KafkaAvroSerde; there is none here, and a decoder for one known schema is
 * cheaper than GenericDatumReader, so this favours Kafka Streams.
 */
final class Codec {
    private Codec() {}

    static final int INPUT_SCHEMA_ID = 1;
    static final int SESSION_SCHEMA_ID = 101;
    static final int DAILY_SCHEMA_ID = 102;

    /** Result of decoding one input value; reason != null means a dead letter. */
    static final class Decoded {
        String reason;
        String error;
        int userOff, userLen;
        long eventIdHash;
        long timestamp;
    }

    private static final class Bad extends Exception {
        Bad(String m) { super(m, null, false, false); }
    }

    /** Decodes a Confluent-framed UserAction. Never throws. */
    static Decoded decode(byte[] v, Decoded out) {
        out.reason = null;
        out.error = null;
        if (v == null || v.length < 5 || v[0] != 0) {
            out.reason = "bad_framing";
            out.error = v == null ? "null value" : "value of " + v.length + " bytes";
            return out;
        }
        int sid = ((v[1] & 0xff) << 24) | ((v[2] & 0xff) << 16) | ((v[3] & 0xff) << 8) | (v[4] & 0xff);
        if (sid != INPUT_SCHEMA_ID) {
            out.reason = "unknown_schema_id";
            out.error = "schema id " + sid;
            return out;
        }
        int[] pos = {5};
        try {
            int eidLen = stringLen(v, pos);
            out.eventIdHash = hash64(v, pos[0], eidLen, 0);
            pos[0] += eidLen;
            out.userLen = stringLen(v, pos);
            out.userOff = pos[0];
            pos[0] += out.userLen;
            out.timestamp = readLong(v, pos);
            int actionLen = stringLen(v, pos);       // action
            pos[0] += actionLen;
            for (int i = 0; i < 2; i++) {            // platform, app_version: ["null","string"]
                long branch = readLong(v, pos);
                if (branch == 1) {
                    int len = stringLen(v, pos);
                    pos[0] += len;
                } else if (branch != 0) {
                    throw new Bad("union branch " + branch);
                }
            }
            if (pos[0] != v.length) {
                throw new Bad((v.length - pos[0]) + " bytes left over after the datum");
            }
        } catch (Bad e) {
            out.reason = "undecodable_avro";
            out.error = e.getMessage();
        }
        return out;
    }

    private static int stringLen(byte[] v, int[] pos) throws Bad {
        long n = readLong(v, pos);
        if (n < 0 || n > v.length - pos[0]) {
            throw new Bad("bad string length " + n);
        }
        return (int) n;
    }

    private static long readLong(byte[] v, int[] pos) throws Bad {
        long raw = 0;
        int shift = 0, p = pos[0];
        while (true) {
            if (p >= v.length) throw new Bad("datum truncated");
            int b = v[p++] & 0xff;
            raw |= (long) (b & 0x7f) << shift;
            if ((b & 0x80) == 0) break;
            shift += 7;
            if (shift > 63) throw new Bad("varint too long");
        }
        pos[0] = p;
        return (raw >>> 1) ^ -(raw & 1);
    }

    /** FNV-1a over the bytes, then murmur3's fmix64: a 64-bit event-id hash. */
    static long hash64(byte[] b, int off, int len, long seed) {
        long h = 0xcbf29ce484222325L ^ seed;
        for (int i = off; i < off + len; i++) {
            h ^= (b[i] & 0xff);
            h *= 0x100000001b3L;
        }
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        h *= 0xc4ceb9fe1a85ec53L;
        h ^= h >>> 33;
        return h;
    }

    // ---- encoding -------------------------------------------------------------

    static final class Out {
        byte[] buf = new byte[256];
        int n;

        void ensure(int more) {
            if (n + more > buf.length) {
                buf = java.util.Arrays.copyOf(buf, Math.max(buf.length * 2, n + more));
            }
        }

        Out header(int schemaId) {
            ensure(5);
            buf[n++] = 0;
            buf[n++] = (byte) (schemaId >>> 24);
            buf[n++] = (byte) (schemaId >>> 16);
            buf[n++] = (byte) (schemaId >>> 8);
            buf[n++] = (byte) schemaId;
            return this;
        }

        Out lng(long x) {
            ensure(10);
            long z = (x << 1) ^ (x >> 63);
            while ((z & ~0x7fL) != 0) {
                buf[n++] = (byte) ((z & 0x7f) | 0x80);
                z >>>= 7;
            }
            buf[n++] = (byte) z;
            return this;
        }

        Out str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            lng(b.length);
            ensure(b.length);
            System.arraycopy(b, 0, buf, n, b.length);
            n += b.length;
            return this;
        }

        Out dbl(double d) {
            ensure(8);
            long bits = Double.doubleToLongBits(d);
            for (int i = 0; i < 8; i++) {
                buf[n++] = (byte) (bits >>> (8 * i));
            }
            return this;
        }

        Out nul() {
            ensure(1);
            buf[n++] = 0; // union branch 0 = null
            return this;
        }

        byte[] bytes() { return java.util.Arrays.copyOf(buf, n); }
    }

    static String date(long day) { return LocalDate.ofEpochDay(day).toString(); }

    static byte[] session(String user, long start, long end, int actions) {
        byte[] ub = user.getBytes(StandardCharsets.UTF_8);
        long h = hash64(ub, 0, ub.length, start);
        return new Out().header(SESSION_SCHEMA_ID)
                .str(String.format("%016x", h)).str(user).lng(start).lng(end).lng(end - start)
                .lng(actions).str(date(Math.floorDiv(start, DayMath.DAY_MS))).bytes();
    }

    static byte[] daily(long day, long dau, long wau, long mau, long sessions, long sessionUsers,
                        double avgDuration, double actionsPerSession) {
        Out o = new Out().header(DAILY_SCHEMA_ID).str(date(day)).lng(dau).lng(wau).lng(mau)
                .lng(sessions).lng(sessionUsers).dbl(avgDuration).dbl(actionsPerSession);
        for (int i = 0; i < 14; i++) {
            o.nul(); // the IQR fields of DailyMetrics (null, as engage emits them)
        }
        return o.bytes();
    }
}
