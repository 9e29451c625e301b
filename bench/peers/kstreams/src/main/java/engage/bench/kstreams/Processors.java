package engage.bench.kstreams;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;

final class Processors {
    private Processors() {}

    static final String WATERMARK_STORE = "partition-max-ts";
    static final String USER_DAYS_STORE = "user-days";
    static final String PENDING_STORE = "pending-day-deltas";

    /**
     * Validation (the dead-letter rules of docs/SEMANTICS.md), event time and
     * lateness. Runs on the input partitions themselves (processValues keeps
     * the key, so no repartition): one instance per input partition, like
     * engage's tasks. Lateness is engage's rule: late if the event time is
     * below (largest valid event time seen on the partition) - grace; the
     * largest time is kept in a store so that it survives restarts.
     *
     * Event time is assigned here with withTimestamp() rather than in a
     * TimestampExtractor, because the skew check needs the Kafka record's own
     * timestamp, and it saves decoding every value twice.
     */
    static final class Validate implements FixedKeyProcessor<String, byte[], Model.Ev> {
        private final long graceMs, maxSkewMs, minTsMs;
        private final int maxUserIdBytes;
        private FixedKeyProcessorContext<String, Model.Ev> ctx;
        private KeyValueStore<Integer, Long> wm;
        private boolean has;
        private long maxTs;
        private final Codec.Decoded dec = new Codec.Decoded();

        Validate(long graceMs, long maxSkewMs, long minTsMs, int maxUserIdBytes) {
            this.graceMs = graceMs;
            this.maxSkewMs = maxSkewMs;
            this.minTsMs = minTsMs;
            this.maxUserIdBytes = maxUserIdBytes;
        }

        @Override
        public void init(FixedKeyProcessorContext<String, Model.Ev> context) {
            ctx = context;
            wm = context.getStateStore(WATERMARK_STORE);
            Long v = wm.get(0);
            has = v != null;
            maxTs = has ? v : Long.MIN_VALUE;
        }

        private void reject(FixedKeyRecord<String, byte[]> r, byte status, String reason, String error) {
            r.headers().add("engage.reason", reason.getBytes(StandardCharsets.UTF_8));
            if (error != null) r.headers().add("engage.error", error.getBytes(StandardCharsets.UTF_8));
            ctx.forward(r.withValue(Model.Ev.rejected(status, r.value())));
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> r) {
            byte[] v = r.value();
            Codec.Decoded d = Codec.decode(v, dec);
            if (d.reason != null) {
                reject(r, Model.DEAD, d.reason, d.error);
                return;
            }
            if (d.userLen == 0 || d.userLen > maxUserIdBytes) {
                reject(r, Model.DEAD, "bad_user_id", "user id of " + d.userLen + " bytes");
                return;
            }
            String key = r.key();
            if (key == null || !key.equals(new String(v, d.userOff, d.userLen, StandardCharsets.UTF_8))) {
                reject(r, Model.DEAD, "key_mismatch", "key differs from user_id");
                return;
            }
            long ts = d.timestamp;
            if (ts < minTsMs || ts > r.timestamp() + maxSkewMs) {
                reject(r, Model.DEAD, "timestamp_out_of_range", "timestamp " + ts);
                return;
            }
            if (has && ts < maxTs - graceMs) {
                reject(r, Model.LATE, "late", null);
                return;
            }
            if (!has || ts > maxTs) {
                has = true;
                maxTs = ts;
                wm.put(0, ts);
            }
            ctx.forward(r.withValue(Model.Ev.ok(ts, d.eventIdHash)).withTimestamp(ts));
        }
    }

    /**
     * Per-user day bookkeeping and per-partition day counters (DayMath).
     * Keyed by user, on the input partitions (no repartition). Counter
     * changes go to a small store of pending deltas (bucketed by activation
     * day), which a wall-clock punctuator ships downstream and clears in the
     * same transaction: exactly once with exactly_once_v2.
     */
    static final class DayPartials implements Processor<String, Model.DayIn, String, DayMath.Buckets> {
        private final long flushMs;
        private ProcessorContext<String, DayMath.Buckets> ctx;
        private KeyValueStore<String, DayMath.UserDays> users;
        private KeyValueStore<Integer, long[]> pending;
        private final Map<Integer, long[]> mirror = new HashMap<>();

        DayPartials(long flushMs) { this.flushMs = flushMs; }

        @Override
        public void init(ProcessorContext<String, DayMath.Buckets> context) {
            ctx = context;
            users = context.getStateStore(USER_DAYS_STORE);
            pending = context.getStateStore(PENDING_STORE);
            try (KeyValueIterator<Integer, long[]> it = pending.all()) {
                while (it.hasNext()) {
                    KeyValue<Integer, long[]> kv = it.next();
                    mirror.put(kv.key, kv.value);
                }
            }
            context.schedule(Duration.ofMillis(flushMs), PunctuationType.WALL_CLOCK_TIME, this::flush);
        }

        private long[] bucket(int day) {
            return mirror.computeIfAbsent(day, k -> new long[DayMath.WIDTH]);
        }

        @Override
        public void process(Record<String, Model.DayIn> r) {
            Model.DayIn in = r.value();
            String user = r.key();
            DayMath.UserDays u = users.get(user);
            if (u == null) u = new DayMath.UserDays();
            if (!in.session) {
                int d = (int) Math.floorDiv(in.start, DayMath.DAY_MS);
                if (u.isActive(d)) return; // most events: nothing changes
                long[] c = bucket(d);
                u.activate(d, c);
                pending.put(d, c);
                users.put(user, u);
            } else {
                int s = (int) Math.floorDiv(in.start, DayMath.DAY_MS);
                long[] c = bucket(s);
                c[DayMath.SESSIONS]++;
                c[DayMath.DURATION_SUM] += in.end - in.start;
                c[DayMath.ACTIONS_SUM] += in.actions;
                if (!u.hasSession(s)) {
                    u.setSession(s);
                    c[DayMath.SESSION_USERS]++;
                    users.put(user, u);
                }
                pending.put(s, c);
            }
        }

        private void flush(long now) {
            if (mirror.isEmpty()) return;
            DayMath.Buckets b = new DayMath.Buckets();
            for (Map.Entry<Integer, long[]> e : mirror.entrySet()) {
                b.byDay.put(e.getKey(), e.getValue());
                pending.delete(e.getKey());
            }
            mirror.clear();
            ctx.forward(new Record<>("all", b, now));
        }
    }
}
