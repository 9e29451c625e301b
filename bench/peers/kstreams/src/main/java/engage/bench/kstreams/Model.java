package engage.bench.kstreams;

import java.nio.ByteBuffer;
import java.util.Arrays;

import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;

/** Values flowing between the processors, and their serdes. */
final class Model {
    private Model() {}

    static final byte OK = 0, DEAD = 1, LATE = 2;

    /** A validated input record. raw is kept only for dead letters and late records. */
    static final class Ev {
        byte status;
        long ts;
        long idHash;
        byte[] raw;

        static Ev ok(long ts, long idHash) {
            Ev e = new Ev();
            e.status = OK;
            e.ts = ts;
            e.idHash = idHash;
            return e;
        }

        static Ev rejected(byte status, byte[] raw) {
            Ev e = new Ev();
            e.status = status;
            e.raw = raw;
            return e;
        }
    }

    static final Serde<Ev> EV_SERDE = Serdes.serdeFrom(
            (topic, e) -> {
                if (e == null) return null;
                int rl = e.raw == null ? -1 : e.raw.length;
                ByteBuffer bb = ByteBuffer.allocate(1 + 8 + 8 + 4 + Math.max(rl, 0));
                bb.put(e.status).putLong(e.ts).putLong(e.idHash).putInt(rl);
                if (rl > 0) bb.put(e.raw);
                return bb.array();
            },
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                Ev e = new Ev();
                e.status = bb.get();
                e.ts = bb.getLong();
                e.idHash = bb.getLong();
                int rl = bb.getInt();
                if (rl >= 0) {
                    e.raw = new byte[rl];
                    bb.get(e.raw);
                }
                return e;
            });

    /**
     * Session aggregate: the distinct event-id hashes of the session (so a
     * re-delivered event counts once, as in engage). actions = hashes.length.
     */
    static final class SessionAgg {
        long[] ids;

        SessionAgg(long[] ids) { this.ids = ids; }

        static SessionAgg empty() { return new SessionAgg(new long[0]); }

        private static boolean contains(long[] a, long h) {
            for (long x : a) if (x == h) return true;
            return false;
        }

        SessionAgg add(long h) {
            if (contains(ids, h)) return this;
            long[] n = Arrays.copyOf(ids, ids.length + 1);
            n[ids.length] = h;
            return new SessionAgg(n);
        }

        static SessionAgg merge(SessionAgg a, SessionAgg b) {
            long[] n = Arrays.copyOf(a.ids, a.ids.length + b.ids.length);
            int k = a.ids.length;
            for (long h : b.ids) if (!contains(a.ids, h)) n[k++] = h;
            return new SessionAgg(Arrays.copyOf(n, k));
        }
    }

    static final Serde<SessionAgg> SESSION_AGG_SERDE = Serdes.serdeFrom(
            (topic, a) -> {
                if (a == null) return null;
                ByteBuffer bb = ByteBuffer.allocate(8 * a.ids.length);
                for (long x : a.ids) bb.putLong(x);
                return bb.array();
            },
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                long[] ids = new long[b.length / 8];
                for (int i = 0; i < ids.length; i++) ids[i] = bb.getLong();
                return new SessionAgg(ids);
            });

    /** Input of the per-user day counting: a counted event or a closed session. */
    static final class DayIn {
        boolean session;
        long start, end;
        int actions;

        static DayIn event(long ts) {
            DayIn d = new DayIn();
            d.start = d.end = ts;
            return d;
        }

        static DayIn session(long start, long end, int actions) {
            DayIn d = new DayIn();
            d.session = true;
            d.start = start;
            d.end = end;
            d.actions = actions;
            return d;
        }
    }

    static final Serde<DayIn> DAY_IN_SERDE = Serdes.serdeFrom(
            (topic, d) -> d == null ? null
                    : ByteBuffer.allocate(21).put((byte) (d.session ? 1 : 0)).putLong(d.start).putLong(d.end)
                            .putInt(d.actions).array(),
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                DayIn d = new DayIn();
                d.session = bb.get() != 0;
                d.start = bb.getLong();
                d.end = bb.getLong();
                d.actions = bb.getInt();
                return d;
            });
}
