"""Train a CIFAR ResNet (He et al. 2016) with fastconv on the CPU.

    python examples/train_resnet.py --model resnet20 --dataset cifar10          # the main job
    python examples/train_resnet.py --dataset mnist --epochs 6                  # offline, bundled sample
    python examples/train_resnet.py --model resnet56 --epochs 160 --schedule step --save r56.npz --plot r56.png

SGD with momentum 0.9 and weight decay 5e-4, a cosine (or step) learning-rate schedule per
epoch, and augmentation of each training batch: for CIFAR random 32x32 crops of the image
padded by 4 and horizontal flips, then per-channel normalization (datasets.CIFAR10_MEAN/STD);
for MNIST the digits are padded to 32x32 and randomly shifted by up to 2 pixels (no flips).
CIFAR is downloaded into the cache (FASTCONV_DATA, else ~/.cache/fastconv) on first use;
``--dataset mnist`` needs no network: it trains on the 4000/1000-image sample bundled with
fastconv. The last line printed is ``test accuracy: 0.xxxx``.
"""
import argparse
import os
import time

import numpy as np

import fastconv
from fastconv import datasets, nn, optim
from fastconv import transforms as T
from fastconv.nn import models

MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
MNIST_MEAN_STD = ((0.1307,), (0.3081,))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="resnet20")
    parser.add_argument("--dataset", choices=["cifar10", "cifar100", "mnist"], default="cifar10",
                        help="mnist: the bundled MNIST sample, padded to 32x32 (default: cifar10)")
    parser.add_argument("--data", metavar="DIR",
                        help="a directory holding the CIFAR archive or its extracted folder "
                             "(default: download into the cache)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: 0.1)")
    parser.add_argument("--schedule", choices=["cosine", "step"], default="cosine",
                        help="cosine annealing to 0 over the epochs, or x0.1 at 50%% and 75%% of them")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--threads", type=int, help="OpenMP threads (default: OMP_NUM_THREADS or all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH",
                        help="save the trained weights (.npz, torchvision's names); they expect "
                             "normalized inputs")
    parser.add_argument("--plot", metavar="PATH", help="save loss and accuracy curves (PNG, needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch, no progress bar")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="write a checkpoint (model, optimizer, scheduler, RNG, epoch) after every epoch")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a --checkpoint file, with the same other options: the run "
                             "ends bitwise as one that was never interrupted")
    args = parser.parse_args(argv)
    for name, low in (("epochs", 0), ("batch_size", 1), ("threads", 1), ("seed", 0), ("limit", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"argument --{name.replace('_', '-')}: must be at least {low}, got {value}")
    if not 0 < args.lr < float("inf"):
        parser.error(f"argument --lr: must be a positive finite number, got {args.lr}")
    if args.resume is not None and not os.path.isfile(args.resume):
        parser.error(f"argument --resume: no file {args.resume}")
    for name in ("save", "plot", "checkpoint"):
        directory = os.path.dirname(os.path.abspath(getattr(args, name) or "."))
        if not os.path.isdir(directory):
            parser.error(f"argument --{name}: directory {directory} does not exist")
    return args


def load(args):
    """``(x_train, y_train), (x_test, y_test), classes, augment, description``; the images
    normalized, the augmentation for each training batch."""
    if args.dataset == "mnist":
        (x_train, y_train), (x_test, y_test) = datasets.load_mnist_sample()
        norm = T.Normalize(*MNIST_MEAN_STD)
        pad = ((0, 0), (0, 0), (2, 2), (2, 2))  # 28x28 -> 32x32, the CIFAR network's input
        x_train, x_test = (np.pad(norm(x), pad) for x in (x_train, x_test))
        return ((x_train, y_train), (x_test, y_test), 10, T.RandomCrop(32, padding=2),
                "bundled MNIST sample, padded to 32x32")
    loader, mean, std, classes = {
        "cifar10": (datasets.load_cifar10, datasets.CIFAR10_MEAN, datasets.CIFAR10_STD, 10),
        "cifar100": (datasets.load_cifar100, datasets.CIFAR100_MEAN, datasets.CIFAR100_STD, 100),
    }[args.dataset]
    (x_train, y_train), (x_test, y_test) = loader(args.data)
    norm = T.Normalize(mean, std)
    # Normalized once, up front; the crop's zero padding then is the mean colour.
    x_train, x_test = norm(x_train), norm(x_test)
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    return (x_train, y_train), (x_test, y_test), classes, augment, args.dataset.upper()


def make_scheduler(optimizer, args):
    """Cosine annealing over the epochs, or x0.1 at 50% and 75% of them."""
    if args.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1)), "cosine"
    milestones = sorted({max(1, args.epochs // 2), max(1, 3 * args.epochs // 4)})
    return optim.MultiStepLR(optimizer, milestones=milestones, gamma=0.1), f"x0.1 at epochs {milestones}"


def main(argv=None):
    args = parse_args(argv)
    fastconv.manual_seed(args.seed)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    (x_train, y_train), (x_test, y_test), classes, augment, description = load(args)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    print(f"data: {description}, {len(x_train)} train / {len(x_test)} test images")
    model = models.cifar_resnet(int(args.model[6:]), num_classes=classes, in_channels=x_train.shape[1])
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler, schedule = make_scheduler(optimizer, args)
    print(f"{args.model} ({sum(p.size for p in model.parameters()):,} parameters), SGD lr={args.lr:g} "
          f"momentum 0.9 weight decay 5e-4, {schedule}, batch {args.batch_size}, {args.epochs} "
          f"epochs, {fastconv.get_num_threads()} threads")
    if args.resume:
        print(f"resuming from {args.resume}")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                        epochs=args.epochs, batch_size=args.batch_size, transform=augment,
                        validation_data=(x_test, y_test), verbose=2 if args.quiet else 1,
                        scheduler=scheduler, checkpoint=args.checkpoint, resume=args.resume)
    print(f"trained in {time.perf_counter() - start:.1f} s")
    if args.save:
        model.save(args.save)
        print(f"saved weights to {args.save}")
    if args.plot:
        try:
            print(f"saved curves to {history.plot(args.plot)}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    print(f"test accuracy: {model.evaluate(x_test, y_test)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
