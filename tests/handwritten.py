"""The article's models, transcribed by hand (../shared/seed): the references specs must match."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LinearRegression(nn.Module):  # pred = X @ W + B
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.rand(2, 1))
        self.B = nn.Parameter(torch.rand(1))

    def forward(self, x):
        return x @ self.W + self.B


def mlp_2_layers(in_size=1, hidden_units=64, out_size=1):
    return nn.Sequential(nn.Linear(in_size, hidden_units), nn.ReLU(), nn.Linear(hidden_units, out_size))


def mlp_3_layers(in_size=1, hidden_units=64, out_size=1):
    return nn.Sequential(
        nn.Linear(in_size, hidden_units), nn.ReLU(),
        nn.Linear(hidden_units, hidden_units), nn.ReLU(),
        nn.Linear(hidden_units, out_size))


class ResNetBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample:
            residual = self.downsample(x)
        out += residual
        out = F.relu(out)
        return out


class ResNetClassifier(nn.Module):
    """The block with its downsample, then global pooling and a linear head (specs/resnet_block.yaml)."""

    def __init__(self, in_channels=3, channels=16, stride=2, classes=4):
        super().__init__()
        down = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels))
        self.block = ResNetBlock(in_channels, channels, stride, down)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.block(x), 1), 1))


class AttentionLayer(nn.Module):
    def __init__(self, input_dim, attention_dim=64):
        super().__init__()
        self.query = nn.Linear(input_dim, attention_dim)
        self.key = nn.Linear(input_dim, attention_dim)
        self.value = nn.Linear(input_dim, attention_dim)
        self.scale = torch.sqrt(torch.FloatTensor([attention_dim]))

    def forward(self, x):
        Q, K, V = self.query(x), self.key(x), self.value(x)  # (B, T, d)
        attention_scores = torch.matmul(Q, K.transpose(-2, -1)) / self.scale
        attention_weights = F.softmax(attention_scores, dim=-1)  # (B, T, T)
        return torch.matmul(attention_weights, V), attention_weights


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, ffn_hidden_dim):
        super().__init__()
        self.attention = AttentionLayer(embed_dim, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(nn.Linear(embed_dim, ffn_hidden_dim), nn.ReLU(), nn.Linear(ffn_hidden_dim, embed_dim))

    def forward(self, x):
        attended, _ = self.attention(x)
        x = self.norm1(attended + x)
        return self.norm2(self.ffn(x) + x)


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers=4, embed_dim=64, ffn_hidden_dim=128, seq_len=16, output_dim=10):
        super().__init__()
        self.layers = nn.ModuleList([TransformerBlock(embed_dim, ffn_hidden_dim) for _ in range(num_layers)])
        self.classifier = nn.Linear(embed_dim * seq_len, output_dim)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)
