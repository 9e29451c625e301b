package engage.bench.kstreams;

import java.util.Map;

import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.apache.kafka.streams.state.internals.BlockBasedTableConfigWithAccessibleCache;
import org.rocksdb.Cache;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.RocksDB;
import org.rocksdb.WriteBufferManager;

/**
 * Bounds the off-heap memory of all RocksDB stores of the instance, the
 * pattern of the Kafka Streams memory-management docs: one block cache shared
 * by every store, memtables charged to it through a WriteBufferManager, and
 * index/filter blocks kept inside it. Without it every store gets its own
 * 50 MB block cache and 3 x 16 MB memtables.
 */
public final class BoundedRocksDB implements RocksDBConfigSetter {
    private static long totalBytes = 64L << 20, memtableBytes = 32L << 20;
    private static Cache cache;
    private static WriteBufferManager writeBufferManager;

    static synchronized void configure(long total, long memtables) {
        totalBytes = total;
        memtableBytes = memtables;
    }

    private static synchronized void init() {
        if (cache == null) {
            RocksDB.loadLibrary();
            cache = new LRUCache(totalBytes, -1, false, 0.1);
            writeBufferManager = new WriteBufferManager(memtableBytes, cache);
        }
    }

    @Override
    public void setConfig(String storeName, Options options, Map<String, Object> configs) {
        init();
        BlockBasedTableConfigWithAccessibleCache t = (BlockBasedTableConfigWithAccessibleCache) options.tableFormatConfig();
        t.setBlockCache(cache);
        t.setCacheIndexAndFilterBlocks(true);
        t.setCacheIndexAndFilterBlocksWithHighPriority(true);
        t.setPinTopLevelIndexAndFilter(true);
        options.setWriteBufferManager(writeBufferManager);
        options.setMaxWriteBufferNumber(2);
        options.setWriteBufferSize(8L << 20);
        options.setTableFormatConfig(t);
    }

    @Override
    public void close(String storeName, Options options) {
        // the cache and the write buffer manager are shared: never closed per store
    }
}
