package engage.bench.kstreams;

import java.nio.ByteBuffer;
import java.util.Map;
import java.util.TreeMap;

import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;

/**
 * The exact distinct-user arithmetic.
 *
 * Input is keyed (and partitioned) by user, so every task owns a disjoint
 * set of users and can count "user u enters DAU/WAU/MAU of day D" exactly
 * once, at the moment u's first event of some day d with D in [d, d+29]
 * arrives. Per task, these increments are bucketed by the activation day d
 * (one counter array per d) and shipped periodically, as deltas, to a single
 * aggregator that adds them up:
 *
 *   DAU(D) = act[D].dau
 *   WAU(D) = sum_{k=0..6}  act[D-k].wauNew[k]
 *   MAU(D) = sum_{k=0..29} act[D-k].mauNew[k]
 */
final class DayMath {
    private DayMath() {}

    static final long DAY_MS = 86_400_000L;

    // layout of a bucket's counters
    static final int DAU = 0;
    static final int WAU0 = 1;         // wauNew[0..6]
    static final int MAU0 = WAU0 + 7;  // mauNew[0..29]
    static final int SESSIONS = MAU0 + 30;
    static final int SESSION_USERS = SESSIONS + 1;
    static final int DURATION_SUM = SESSIONS + 2;
    static final int ACTIONS_SUM = SESSIONS + 3;
    static final int WIDTH = SESSIONS + 4;

    /** Per user: days with activity and days with a session start, as 64-day bitmasks. */
    static final class UserDays {
        int anchor = Integer.MIN_VALUE; // newest day set; bit i = day anchor - i
        long active, sessions;

        private void advance(int d) {
            if (anchor == Integer.MIN_VALUE) {
                anchor = d;
            } else if (d > anchor) {
                int s = d - anchor;
                active = s >= 64 ? 0 : active << s;
                sessions = s >= 64 ? 0 : sessions << s;
                anchor = d;
            }
        }

        private static boolean bit(long mask, int anchor, int d) {
            if (anchor == Integer.MIN_VALUE || d > anchor || anchor - d >= 64) return false;
            return (mask >>> (anchor - d) & 1) != 0;
        }

        boolean isActive(int d) { return bit(active, anchor, d); }

        boolean hasSession(int d) { return bit(sessions, anchor, d); }

        void setActive(int d) {
            advance(d);
            if (anchor - d < 64) active |= 1L << (anchor - d);
        }

        void setSession(int d) {
            advance(d);
            if (anchor - d < 64) sessions |= 1L << (anchor - d);
        }

        /** Any active day in [lo, hi]? */
        boolean activeIn(int lo, int hi) {
            if (anchor == Integer.MIN_VALUE) return false;
            hi = Math.min(hi, anchor);
            if (hi < lo) return false;
            int iLo = anchor - hi, iHi = Math.min(anchor - lo, 63);
            if (iLo > 63) return false;
            long m = (-1L >>> (63 - (iHi - iLo))) << iLo;
            return (active & m) != 0;
        }

        /**
         * Counts the activation of day d (not yet active) into c: DAU of d,
         * and WAU/MAU of every later day that had no other active day of
         * this user in its window.
         */
        void activate(int d, long[] c) {
            c[DAU]++;
            for (int k = 0; k < 30; k++) {
                if (!activeIn(d + k - 29, d + k)) c[MAU0 + k]++;
            }
            for (int k = 0; k < 7; k++) {
                if (!activeIn(d + k - 6, d + k)) c[WAU0 + k]++;
            }
            setActive(d);
        }
    }

    static final Serde<UserDays> USER_DAYS_SERDE = Serdes.serdeFrom(
            (topic, u) -> u == null ? null
                    : ByteBuffer.allocate(20).putInt(u.anchor).putLong(u.active).putLong(u.sessions).array(),
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                UserDays u = new UserDays();
                u.anchor = bb.getInt();
                u.active = bb.getLong();
                u.sessions = bb.getLong();
                return u;
            });

    static final Serde<long[]> COUNTERS_SERDE = Serdes.serdeFrom(
            (topic, c) -> {
                if (c == null) return null;
                ByteBuffer bb = ByteBuffer.allocate(8 * c.length);
                for (long x : c) bb.putLong(x);
                return bb.array();
            },
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                long[] c = new long[b.length / 8];
                for (int i = 0; i < c.length; i++) c[i] = bb.getLong();
                return c;
            });

    /** Buckets by activation day, added up by the aggregator. */
    static final class Buckets {
        final TreeMap<Integer, long[]> byDay = new TreeMap<>();

        static Buckets plus(Buckets a, Buckets b) {
            Buckets r = new Buckets();
            for (Buckets x : new Buckets[] {a, b}) {
                for (Map.Entry<Integer, long[]> e : x.byDay.entrySet()) {
                    long[] t = r.byDay.computeIfAbsent(e.getKey(), k -> new long[WIDTH]);
                    long[] s = e.getValue();
                    for (int i = 0; i < WIDTH; i++) t[i] += s[i];
                }
            }
            return r;
        }

        private long at(int day, int field) {
            long[] c = byDay.get(day);
            return c == null ? 0 : c[field];
        }

        /** DailyMetrics values of every day from the first to the last active day. */
        java.util.List<org.apache.kafka.streams.KeyValue<String, byte[]>> daily() {
            java.util.List<org.apache.kafka.streams.KeyValue<String, byte[]>> out = new java.util.ArrayList<>();
            int first = Integer.MAX_VALUE, last = Integer.MIN_VALUE;
            for (Map.Entry<Integer, long[]> e : byDay.entrySet()) {
                if (e.getValue()[DAU] > 0) {
                    first = Math.min(first, e.getKey());
                    last = Math.max(last, e.getKey());
                }
            }
            for (int d = first; first <= last && d <= last; d++) {
                long wau = 0, mau = 0;
                for (int k = 0; k < 7; k++) wau += at(d - k, WAU0 + k);
                for (int k = 0; k < 30; k++) mau += at(d - k, MAU0 + k);
                long sessions = at(d, SESSIONS);
                double avgDur = sessions == 0 ? 0.0 : (double) at(d, DURATION_SUM) / sessions;
                double aps = sessions == 0 ? 0.0 : (double) at(d, ACTIONS_SUM) / sessions;
                String date = Codec.date(d);
                out.add(org.apache.kafka.streams.KeyValue.pair(date, Codec.daily(d, at(d, DAU), wau, mau,
                        sessions, at(d, SESSION_USERS), avgDur, aps)));
            }
            return out;
        }
    }

    static final Serde<Buckets> BUCKETS_SERDE = Serdes.serdeFrom(
            (topic, m) -> {
                if (m == null) return null;
                ByteBuffer bb = ByteBuffer.allocate(4 + m.byDay.size() * (4 + 8 * WIDTH));
                bb.putInt(m.byDay.size());
                for (Map.Entry<Integer, long[]> e : m.byDay.entrySet()) {
                    bb.putInt(e.getKey());
                    for (long x : e.getValue()) bb.putLong(x);
                }
                return bb.array();
            },
            (topic, b) -> {
                if (b == null) return null;
                ByteBuffer bb = ByteBuffer.wrap(b);
                Buckets m = new Buckets();
                int n = bb.getInt();
                for (int i = 0; i < n; i++) {
                    int day = bb.getInt();
                    long[] c = new long[WIDTH];
                    for (int j = 0; j < WIDTH; j++) c[j] = bb.getLong();
                    m.byDay.put(day, c);
                }
                return m;
            });
}
